// A small statement layout built the way finwidget/widgets/explorer.py's layout_state does,
// from a text split into words/numbers, one token per character group.
import type { LayoutState, SpanRecord } from "../protocol";

/**
 * Build a layout from lines of text: each whitespace-separated piece is a span; spans of
 * digits are "number" spans of as many tokens as characters (digits tokenized one by one,
 * as Qwen2 does), words are one token. One trailing template token is the answer position.
 */
export function makeLayout(lines: string[]): LayoutState {
  const text = lines.join("\n");
  const spans: SpanRecord[] = [];
  const tokens: string[] = [];
  const tokenToSpan: number[] = [];
  const lineRanges: [number, number, number][] = [];
  let pos = 0;
  lines.forEach((line, li) => {
    lineRanges.push([li, pos, pos + line.length]);
    const re = /\S+/g;
    let m: RegExpExecArray | null;
    while ((m = re.exec(line)) !== null) {
      const isNumber = /^[\d,.\-+]+$/.test(m[0]);
      const index = spans.length;
      const tokenStart = tokens.length;
      const pieces = isNumber ? m[0].split("") : [m[0]];
      for (const p of pieces) {
        tokens.push(p);
        tokenToSpan.push(index);
      }
      spans.push({
        index,
        kind: isNumber ? "number" : "word",
        text: m[0],
        char_start: pos + m.index,
        char_end: pos + m.index + m[0].length,
        token_start: tokenStart,
        token_end: tokens.length,
        line: li,
        category: isNumber ? "numeric" : null,
        value: isNumber ? Number(m[0].replace(/,/g, "")) : null,
        year: null,
        line_item: null,
      });
    }
    pos += line.length + 1;
  });
  tokens.push("Answer:");
  tokenToSpan.push(-1);
  return {
    text,
    tokens,
    token_to_span: tokenToSpan,
    spans,
    lines: lineRanges,
    line_items: [],
    answer_position: tokens.length - 1,
  };
}
