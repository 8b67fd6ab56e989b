"""Run an ``Experiment`` from the command line, alone or under ``accelerate launch``.

    python -m finwidget.population.launch --model demo --dataset statements.csv --output runs/a \\
        --hypothesis "..." [--grouping label] [--metrics answer_financial entropy] [--batch-size 8]

    accelerate launch --num_processes 4 -m finwidget.population.launch --model Qwen/Qwen2-7B-Instruct ...

Under accelerate each process loads the model onto its own device and runs every
``num_processes``-th batch into the same output folder; ``--device-map auto`` instead
splits one model over the visible GPUs of a single process. ``--manifest`` reruns the
experiment a manifest describes.
"""

from __future__ import annotations

import argparse
import sys


def _load(name: str, device_map: str | None):
    if name == "demo":
        from finwidget.demo import load_demo_model

        return load_demo_model()
    from finwidget.loading import load_model

    if device_map:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(name, device_map=device_map, dtype="auto")
        return model.eval(), AutoTokenizer.from_pretrained(name)
    from finwidget.population.experiment import distributed_state

    state = distributed_state()
    return load_model(name, device="auto" if state is None else str(state.device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finwidget.population.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="'demo', a Hugging Face id or a local folder")
    parser.add_argument("--output", required=True, help="results folder (resumes if it exists)")
    parser.add_argument("--dataset", help="CSV / JSONL / Parquet file with a text column")
    parser.add_argument("--manifest", help="rerun the experiment of this manifest.json")
    parser.add_argument("--hypothesis", default="", help="the hypothesis in words")
    parser.add_argument("--grouping", default="label")
    parser.add_argument("--test", default="welch")
    parser.add_argument("--metrics", nargs="*")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--device-map", default=None, help="e.g. 'auto' to split one model over GPUs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from finwidget.population.experiment import Experiment

    if args.manifest:
        experiment = Experiment.from_manifest(args.manifest, dataset=args.dataset)
    else:
        if not args.dataset:
            parser.error("--dataset is required (or --manifest)")
        experiment = Experiment(args.hypothesis or "(no hypothesis given)", args.dataset,
                                metrics=tuple(args.metrics) if args.metrics else None, grouping=args.grouping,
                                test=args.test, seed=args.seed, batch_size=args.batch_size,
                                text_column=args.text_column, label_column=args.label_column)
    model, tokenizer = _load(args.model, args.device_map)
    result = experiment.run(model, tokenizer, args.output, progress=not args.no_progress)
    from finwidget.population.experiment import _distributed

    if _distributed()[0] == 0:
        missing = result.missing()
        print(f"{args.output}: {result.manifest['num_batches'] - len(missing)} of "
              f"{result.manifest['num_batches']} batches done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
