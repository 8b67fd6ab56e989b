"""How the explorer answers the frontend's requests: one handler per request kind.

:func:`handle_request` validates a message with :func:`~finwidget.widgets.protocol.parse_request`,
looks its kind up in ``HANDLERS`` and encodes what the session returns; a bad request
or a failure inside becomes an error reply, never an exception out of the widget.
A handler is ``(explorer, params, send_progress) -> (reply fields, Payload | None)``.
"""

from __future__ import annotations

import base64
import traceback

import numpy as np

from finwidget.errors import FinwidgetError
from finwidget.widgets.protocol import (
    PNG_PREFIX,
    Payload,
    ProtocolError,
    error_reply,
    ok_reply,
    parse_request,
    selection_param,
    strict_json_content,
)


def grid_fields(explorer, measure: str, selection: list[int], direction: str = "to") -> tuple[dict, Payload]:
    """The reply fields and payload of one grid measure: values ``[L * H]`` as float16."""
    values, label = explorer.session.grid(measure, selection, direction)
    payload = Payload()
    payload.add_f16("values", np.asarray(values, dtype=np.float32).reshape(-1))
    return {"measure": measure, "label": label}, payload


def _runs(explorer, p) -> tuple[str, list]:
    """``(run, [session views])``: the views to compute from (one, or ablated and clean for
    a difference) and the run's name."""
    run = p.get("run", "clean")
    session = explorer.session
    if run == "clean":
        return run, [session]
    ablated = session.ablated_view(p["ablations"])
    return run, [ablated] if run == "ablated" else [ablated, session]


def _run_fields(explorer, p) -> dict:
    run = p.get("run", "clean")
    return {"run": run, "run_label": explorer.session.run_label(run, p.get("ablations", []))}


def _head_matrix(explorer, p, send_progress):
    run, views = _runs(explorer, p)
    matrix = views[0].head_matrix(p["layer"], p["head"])
    encoding = p["encoding"]
    if run == "difference":
        matrix = matrix - views[1].head_matrix(p["layer"], p["head"])
        encoding = "f16" if encoding == "f16" else "u8"  # signed: linear bytes with an offset
    payload = Payload()
    payload.add_causal_matrix("matrix", matrix, encoding)
    return {"layer": p["layer"], "head": p["head"], **_run_fields(explorer, p)}, payload


def _token_values(explorer, p, send_progress):
    if p.get("what_if") == "difference":
        return _what_if_token_values(explorer, p)
    run, views = _runs(explorer, p)
    args = (p["scope"], p["selection"], p["direction"], p.get("layer"), p.get("head"), p.get("layer_range"))
    values, reduce, label = views[0].token_values(*args)
    if run == "difference":
        values = values - views[1].token_values(*args)[0]
    payload = Payload()
    payload.add_f16("values", values)
    return {"reduce": reduce, "label": label, **_run_fields(explorer, p)}, payload


def _grid(explorer, p, send_progress):
    if p.get("what_if") == "difference":
        return _what_if_grid(explorer, p)
    return grid_fields(explorer, p["measure"], p["selection"], p["direction"])


def _flow(explorer, p, send_progress):
    run, views = _runs(explorer, p)
    flow = views[0].flow(p["selection"], p["direction"])
    if run == "difference":
        clean = views[1].flow(p["selection"], p["direction"])
        flow["spread"] = flow["spread"] - clean["spread"]
        for key in ("selection_mass", "logit_lens"):
            flow[key] = [None if a is None or b is None else a - b for a, b in zip(flow[key], clean[key])]
    payload = Payload()
    payload.add_f16("spread", flow["spread"])
    fields = {key: flow[key] for key in ("selection_mass", "logit_lens", "label")}
    return {**fields, **_run_fields(explorer, p)}, payload


def _set_ablations(explorer, p, send_progress):
    prediction = explorer.session.prediction(p["ablations"], should_stop=p.get(SHOULD_STOP))
    explorer.ablations = p["ablations"]  # the observer finds the prediction cached
    fields = {"prediction": prediction, "ablations": p["ablations"]}
    payload = None
    if "grid" in p:
        grid, payload = grid_fields(explorer, p["grid"], selection_param(explorer.selection), explorer.direction)
        fields.update(grid)
    return fields, payload


def _sweep(explorer, p, send_progress):
    layers = None
    if p.get("layer_range"):
        first, last = p["layer_range"]
        layers = list(range(first, last + 1))
    statements = p.get("statements", "current")
    heads = (len(layers) if layers else explorer.session.num_layers) * explorer.session.num_heads
    total = heads * (explorer.num_statements if statements == "all" else 1)
    step = max(1, total // 50)

    def progress(done, total_):
        if send_progress is not None and (done % step == 0 or done == total_):
            send_progress(done, total_, "head ablations")

    if statements == "all":
        explorer.sweep(p["mode"], p.get("value"), progress=progress, layers=layers, statements="all",
                       should_stop=explorer.sweep_cancel.is_set)
        return grid_fields(explorer, "mean_abs_change", [])
    explorer.sweep(p["mode"], p.get("value"), progress=progress, layers=layers,
                   should_stop=explorer.sweep_cancel.is_set)
    return grid_fields(explorer, "ablation_effect", [])


def _estimate_ablations(explorer, p, send_progress):
    """The click's first-order estimate, at once (no model: kept gradients only)."""
    from finwidget.widgets.click_estimates import EstimateUnavailable
    from finwidget.widgets.session import AnalysisUnavailable

    try:
        prediction = explorer.session.estimate(p["ablations"])
    except (EstimateUnavailable, AnalysisUnavailable) as err:
        return {"prediction": None, "reason": str(err), "ablations": p["ablations"]}, None
    return {"prediction": prediction, "ablations": p["ablations"]}, None


def _cancel_sweep(explorer, p, send_progress):
    explorer.sweep_cancel.set()
    return {"cancelled": True}, None


def _png(explorer, p, send_progress):
    explorer.last_png = base64.b64decode(p["data_url"][len(PNG_PREFIX) :], validate=False)
    explorer.last_png_view = p["view"]
    return {"bytes": len(explorer.last_png)}, None


def _circuit(explorer, p, send_progress):
    """The statement's circuit (``CircuitGraph.to_dict()``) as the ``graph`` field (JSON, no arrays)."""
    return {"method": p["method"], "graph": explorer.session.circuit(p["method"])}, None


# ---------------------------------------------------------------- what-if (finwidget.widgets.what_if)
def _what_if_grid(explorer, p):
    values, label = explorer.what_if_grid_difference(p["measure"], p["selection"], p["direction"])
    payload = Payload()
    payload.add_f16("values", np.asarray(values, dtype=np.float32).reshape(-1))
    return {"measure": p["measure"], "label": label, "what_if": "difference"}, payload


def _what_if_token_values(explorer, p):
    tokens, spans, label = explorer.what_if_span_difference(p["scope"], p.get("layer"), p.get("head"), p.get("layer_range"))
    payload = Payload()
    payload.add_f16("values", tokens)
    payload.add_f32("span_values", spans)
    return {"reduce": "sum", "label": label, "run": "clean", "run_label": "edited minus original",
            "what_if": "difference"}, payload


def _what_if(explorer, p, send_progress):
    state = explorer._what_if_number(p["span"], p["value"])  # handle_request holds the model
    return {"what_if_state": state, "prediction": explorer.prediction}, None


def _undo_what_if(explorer, p, send_progress):
    state = explorer._undo_what_if()
    return {"what_if_state": state, "prediction": explorer.prediction}, None


#: the key under which ``handle_request`` hands a handler its ``should_stop`` (not a protocol field)
SHOULD_STOP = "_should_stop"

#: request kinds that run the model (one at a time: see ``handle_request``)
MODEL_KINDS = frozenset({"set_ablations", "sweep", "circuit", "what_if", "undo_what_if"})

#: request kind -> its handler
HANDLERS = {
    "head_matrix": _head_matrix,
    "token_values": _token_values,
    "grid": _grid,
    "flow": _flow,
    "set_ablations": _set_ablations,
    "sweep": _sweep,
    "cancel_sweep": _cancel_sweep,
    "estimate_ablations": _estimate_ablations,
    "png": _png,
    "circuit": _circuit,
    "what_if": _what_if,
    "undo_what_if": _undo_what_if,
}


def handle_request(explorer, content, send_progress=None, should_stop=None,
                   model_lock_held: bool = False) -> tuple[dict, list]:
    """Answer one request from the frontend: ``(reply content, reply buffers)``. Never raises.

    ``should_stop``: for a model run that can stop between layers (``set_ablations``);
    ``model_lock_held``: the caller (a worker thread) already holds ``explorer.model_lock``.

    Whatever arrives (a kind that is a list or a dict, no id, huge values), the reply is an
    error reply echoing at most a short prefix of the bad value (``protocol.shown``), and every
    reply is strict JSON (non-finite floats become null: ``protocol.strict_json_content``).
    """
    message_id = content.get("id") if isinstance(content, dict) else None
    kind = content.get("kind") if isinstance(content, dict) else None
    message_id = message_id if isinstance(message_id, int) and not isinstance(message_id, bool) else None
    kind = kind if isinstance(kind, str) and kind in HANDLERS else None
    try:
        request = parse_request(content, explorer.protocol_geometry)
    except ProtocolError as err:
        return error_reply(message_id, kind, f"bad request: {err}")
    except Exception as err:  # noqa: BLE001 - a malformed request must get a reply, not an exception
        return error_reply(message_id, kind, f"bad request: {_failure(err)}")
    lock = getattr(explorer, "model_lock", None)
    needs_model = _needs_model(request) and not model_lock_held
    if lock is not None and needs_model and not _take_model(explorer, lock):
        # A sweep runs in its own thread and holds the model; the kernel must stay free to
        # take a cancel, so other model work is refused rather than waited for.
        return error_reply(request.id, request.kind, "a sweep is running: wait for it to finish or cancel it")
    params = request.params if should_stop is None else {**request.params, SHOULD_STOP: should_stop}
    try:
        fields, payload = HANDLERS[request.kind](explorer, params, send_progress)
        content, buffers = ok_reply(request, fields, payload)
        return strict_json_content(content), buffers
    except FinwidgetError as err:
        return error_reply(request.id, request.kind, str(err))
    except Exception as err:  # noqa: BLE001 - a failure must reach the UI, not kill the widget
        return error_reply(request.id, request.kind, f"the kernel failed to answer {request.kind}: {_failure(err)}")
    finally:
        if lock is not None and needs_model:
            lock.release()


def _needs_model(request) -> bool:
    """Whether answering runs the model (so it must hold ``explorer.model_lock``): ablations,
    sweeps, attention of an ablated run, and grid measures read from the model."""
    from finwidget.analysis.metrics import head_measure

    p = request.params
    if request.kind in MODEL_KINDS or p.get("run", "clean") != "clean":
        return True
    measure = p.get("measure") if request.kind == "grid" else None
    return measure is not None and head_measure(measure).needs == "model"


def _take_model(explorer, lock) -> bool:
    """Acquire the model for a request on the kernel's thread: refused at once while a
    sweep runs; otherwise waited for (a click's re-run ends within a re-run, a background
    gradient pass steps aside at its next layer)."""
    if getattr(explorer, "sweeping", False):
        return False
    worker = getattr(explorer, "model_worker", None)
    if worker is None:
        return lock.acquire(blocking=False)
    return worker.wait_for_model()


def _failure(err: BaseException) -> str:
    """One line naming an unexpected exception (its type and message, cut short)."""
    try:
        return traceback.format_exception_only(type(err), err)[-1].strip()[:500]
    except Exception:  # noqa: BLE001
        return type(err).__name__
