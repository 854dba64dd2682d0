"""Export LSNet to ONNX, and check an ONNX file made elsewhere against this implementation.

    python -m lsnet_ref.export --variant t --checkpoint lsnet_t.pth --input-size 224 lsnet_t.onnx
    python -m lsnet_ref.export --verify OTHER.onnx --variant t --checkpoint lsnet_t.pth

The export holds standard operators only (`lsnet_ref.onnx_graph`), with SKA as Pad, Slice, Mul and
Sum: channel c uses weight group c mod C/8 (docs/architecture.md §1). --verify runs OTHER.onnx and
our model on the same random images and prints the largest error relative to the largest logit;
when they disagree it also runs our model with the mistaken grouping c // 8, and says so if that is
what the other file computes. Exit status: 0 done or in agreement, 1 disagreement, 2 bad arguments.
Needs the `export` extra: pip install 'lsnet-ref[export]'.
"""
import argparse
import contextlib
import os
import secrets
import sys
from dataclasses import dataclass

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint
from .checks import is_int
from .lsnet import LSNet, checkpoint_filter, create_model, default_img_sizes, list_models
from .tensor import no_grad

__all__ = ["AGREEMENT", "Verification", "export_onnx", "main", "verify_onnx"]

EXTRA = "pip install 'lsnet-ref[export]'"
# Largest error relative to the largest logit under which two float32 implementations agree: a
# faithful float32 export differs by about 1e-6 (rounding order); the c // 8 grouping by 1e-3 and
# more, even in the tests' random networks.
AGREEMENT = 1e-4
VARIANTS = [name.removeprefix("lsnet_") for name in list_models()]


def _onnx_graph():
    try:
        from . import onnx_graph
    except ImportError as error:
        raise ImportError(f"ONNX export needs the onnx package ({error}): {EXTRA}") from None
    return onnx_graph


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running ONNX files needs onnxruntime ({error}): {EXTRA}") from None
    return onnxruntime


def _check_input_size(op, input_size):
    """(H, W) from an int or a pair of ints >= 1, or ValueError naming 'input_size'."""
    sides = input_size if isinstance(input_size, (tuple, list)) else (input_size, input_size)
    if len(sides) != 2 or not all(is_int(side, 1) for side in sides):
        raise ValueError(f"{op}: argument 'input_size' must be a side >= 1 or (height, width); got {input_size!r}")
    return int(sides[0]), int(sides[1])


def _check_opset(opset):
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not is_int(opset, 13) or opset > newest:
        raise ValueError(f"export_onnx: argument 'opset' must be an integer from 13 to {newest}; got {opset!r}")
    return int(opset)


def _check_path(path):
    """The path as a str, or OSError when its folder is missing or the path is a folder (before any work)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OSError(f"export_onnx: cannot write {path}: {folder} is not an existing folder")
    if os.path.isdir(path):
        raise OSError(f"export_onnx: cannot write {path}: it is a folder")
    return path


def _write_atomically(path, data):
    """Write `data` to a temporary file next to `path`, then rename it over `path`; on any failure the
    temporary file is removed and `path` is as it was."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{secrets.token_hex(4)}{name}")
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise OSError(f"export_onnx: cannot write {path} ({error.strerror or error}); "
                          "the previous file, if any, is untouched") from error
        raise


def export_onnx(model, path, input_size=(224, 224), opset=17):
    """Write `model` (an LSNet) to `path` as an ONNX file of standard operators.

    The eval-mode model is fused on a copy (`model` is left as it was). The input "images" is
    (batch, in_chans, H, W) float32 with a dynamic batch and (H, W) = `input_size` (an int for a
    square) fixed: the stage-4 attention-bias tables are gathered for that size. The output is
    "logits" (batch, num_classes), for distilled models the mean of both heads as in eval mode.
    The metadata records input_size "HxW" and the SKA grouping.

    SKA's mapping: with G = C/8 weight groups, channel c = j * G + g uses group g = c mod G. The
    graph reshapes x to (B, C/G, G, H, W) and the weights to (B, 1, G, 9, H, W), so broadcasting
    pairs every channel with its group; each of the 3 x 3 taps is a Slice of the zero-padded x times
    that tap's weights, and Sum adds the nine.

    The file is written to a temporary file in the same folder and renamed over `path`: a failure
    leaves nothing half-written. Raises TypeError for a model that is not an LSNet, ValueError for
    a bad input_size or opset (or one whose attention tables pass ONNX's 2 GiB limit), OSError when
    `path` cannot be written.
    """
    if not isinstance(model, LSNet):
        raise TypeError(f"export_onnx: argument 'model' must be an LSNet; got {type(model).__name__}")
    height, width = _check_input_size("export_onnx", input_size)
    graphs = _onnx_graph()
    opset = _check_opset(opset)
    path = _check_path(path)
    try:
        proto = graphs.to_onnx(model, (height, width), opset)
    except graphs.GraphTooLarge as error:
        raise ValueError(f"export_onnx: argument 'input_size' {height}x{width} is too large: {error}") from None
    _write_atomically(path, proto.SerializeToString())


# ----- checking a file made elsewhere -----
@dataclass
class Verification:
    """The largest |other - ours| / max |ours| on the same images, and the same error against our model
    with the mistaken grouping c // 8 (None when the files agreed and it was not run)."""

    relative_error: float
    blocked_grouping_error: float | None

    @property
    def agrees(self):
        return self.relative_error <= AGREEMENT

    @property
    def uses_blocked_grouping(self):
        return self.blocked_grouping_error is not None and self.blocked_grouping_error <= AGREEMENT


def _relative_error(other, ours):
    return float(np.abs(other.astype(np.float64) - ours).max() / max(np.abs(ours).max(), np.finfo(np.float32).tiny))


def _session(source, what):
    ort = _onnxruntime()
    try:
        return ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types for unreadable or invalid files
        raise ValueError(f"{what}: ONNX Runtime cannot load it ({type(error).__name__}: {error})") from None


def _image_input(session, path, model, input_size):
    """(input name, input dtype, (H, W)): one rank-4 image input; a fixed spatial size must match input_size."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [(entry.name, entry.shape) for entry in inputs]
        raise ValueError(f"verify_onnx: {path} must take one (batch, {model.in_chans}, H, W) input; it takes {shapes}")
    entry = inputs[0]
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    if entry.type not in dtypes:
        raise ValueError(f"verify_onnx: {path}'s input {entry.name!r} is {entry.type}; float or float16 expected")
    fixed = tuple(side if isinstance(side, int) else None for side in entry.shape[2:])
    if input_size is None:
        if None in fixed:
            raise ValueError(f"verify_onnx: {path} takes any image size ({entry.shape}); give argument 'input_size'")
        return entry.name, dtypes[entry.type], fixed
    size = _check_input_size("verify_onnx", input_size)
    if any(given is not None and given != side for given, side in zip(fixed, size)):
        raise ValueError(f"verify_onnx: argument 'input_size' {size} differs from {path}'s input {entry.shape}")
    return entry.name, dtypes[entry.type], size


def verify_onnx(path, model, input_size=None, batch=2, seed=0):
    """Run the ONNX file at `path` and `model` (an LSNet, in eval mode on a copy) on the same random images.

    `input_size` defaults to the file's fixed spatial size; the file's batch, if fixed, overrides
    `batch`. When the two disagree (relative error above AGREEMENT), our model's export with the
    mistaken SKA grouping c // 8 runs on the same images too. Returns a Verification.
    """
    if not isinstance(model, LSNet):
        raise TypeError(f"verify_onnx: argument 'model' must be an LSNet; got {type(model).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"verify_onnx: {path}: no such file")
    session = _session(path, f"verify_onnx: {path}")
    name, dtype, (height, width) = _image_input(session, path, model, input_size)
    file_batch = session.get_inputs()[0].shape[0]
    batch = file_batch if isinstance(file_batch, int) else batch
    images = np.random.default_rng(seed).standard_normal((batch, model.in_chans, height, width)).astype(np.float32)
    try:
        other = session.run(None, {name: images.astype(dtype)})[0]
    except Exception as error:  # as above: ONNX Runtime's own exception types
        raise ValueError(f"verify_onnx: {path}: ONNX Runtime cannot run it on {images.shape} images "
                         f"({type(error).__name__}: {error})") from None
    with no_grad():
        ours = model.copy().eval()(images).numpy()
    if other.shape != ours.shape:
        raise ValueError(f"verify_onnx: {path} outputs shape {other.shape}; our model gives {ours.shape}")
    error = _relative_error(other, ours)
    if error <= AGREEMENT:
        return Verification(error, None)
    blocked = _onnx_graph().to_onnx(model, (height, width), grouping="blocked")
    mistaken = _session(blocked.SerializeToString(), "the c // 8 export").run(None, {"images": images})[0]
    return Verification(error, _relative_error(other, mistaken))


# ----- command line -----
class UsageError(ValueError):
    """A bad command-line argument: printed as one "error:" line, exit status 2."""


def _load_model(variant, checkpoint, num_classes=None):
    """The variant (e.g. "t", "t_distill") with the checkpoint's weights, in eval mode.

    num_classes defaults to the checkpoint's (the rows of head.l.weight). Raises UsageError naming
    --checkpoint when the file cannot be read or holds another architecture.
    """
    name = f"lsnet_{variant}"
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError as error:
        raise UsageError(f"--checkpoint: {error}") from None
    if num_classes is None:
        num_classes = state["head.l.weight"].shape[0] if "head.l.weight" in state else 1000
    model = create_model(name, num_classes=num_classes)
    try:
        model.load_state_dict(checkpoint_filter(state, model))
    except ValueError as error:
        problems = str(error).splitlines()[1:]  # load_state_dict lists one problem per line
        detail = problems[0].strip() if problems else str(error)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        base, distilled = name.removeprefix("lsnet_").removesuffix("_distill"), "head_dist.l.weight" in state
        hint = ""
        if distilled and not model.distillation:
            hint = f"; it is a distilled checkpoint: try --variant {base}_distill"
        elif model.distillation and not distilled:
            hint = f"; it is not a distilled checkpoint: try --variant {base}"
        raise UsageError(f"--checkpoint {checkpoint} does not fit {name}: {detail}{more}{hint}") from None
    return model.eval()


def _as_flags(error):
    """An export_onnx or verify_onnx message in the command line's terms."""
    message = str(error).replace("argument 'input_size'", "--input-size").replace("argument 'opset'", "--opset")
    return UsageError(message.replace("export_onnx: ", "").replace("verify_onnx: ", "--verify "))


def _parse_input_size(text):
    """'224' or '160x192' (height x width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"must be a side >= 1 (224) or HEIGHTxWIDTH (160x192); got {text!r}")
    sides = tuple(int(part) for part in parts)
    return sides * 2 if len(sides) == 1 else sides


def parser():
    parser = argparse.ArgumentParser(prog="python -m lsnet_ref.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", help="the .onnx file to write (not with --verify)")
    parser.add_argument("--variant", required=True, choices=VARIANTS,
                        help="LSNet variant; _distill: the distilled models (output: the mean of both heads)")
    parser.add_argument("--checkpoint", required=True,
                        help="weights: the authors' .pth files or ours (.pth, .npz, .safetensors)")
    parser.add_argument("--input-size", type=_parse_input_size,
                        help="image side or HEIGHTxWIDTH, fixed in the file (default: the variant's, 224; with "
                             "--verify the file's own)")
    parser.add_argument("--num-classes", type=int, help="classes of the head (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--verify", metavar="OTHER.onnx", help="compare an ONNX file made elsewhere with our model")
    parser.add_argument("--batch", type=int, default=2, help="images per --verify run when the file's batch is "
                                                             "dynamic (default 2)")
    return parser


def _run(args):
    if (args.output is None) == (args.verify is None):
        raise UsageError("give either an output .onnx path or --verify OTHER.onnx")
    if args.num_classes is not None and args.num_classes < 0:
        raise UsageError(f"--num-classes must be >= 0; got {args.num_classes}")
    model = _load_model(args.variant, args.checkpoint, args.num_classes)
    name = f"lsnet_{args.variant}"
    if args.output is not None:
        size = args.input_size or (default_img_sizes[name.removesuffix("_distill")],) * 2
        try:
            export_onnx(model, args.output, size, args.opset)
        except (ValueError, OSError) as error:
            raise _as_flags(error) from None
        print(f"wrote {args.output}: {name}, input (batch, {model.in_chans}, {size[0]}, {size[1]}), "
              f"opset {args.opset}, {os.path.getsize(args.output) / 2**20:.1f} MiB")
        return 0
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1; got {args.batch}")
    try:
        result = verify_onnx(args.verify, model, args.input_size, args.batch)
    except ValueError as error:
        raise _as_flags(error) from None
    print(f"{args.verify} against lsnet-ref's {name}: largest error {result.relative_error:.3g} of the largest logit")
    if result.agrees:
        print(f"agreement (within {AGREEMENT:g})")
        return 0
    if result.uses_blocked_grouping:
        print(f"DISAGREEMENT: {args.verify} computes SKA with the mistaken grouping c // 8 (its error against our "
              f"model with that grouping is {result.blocked_grouping_error:.3g}). Channel c must use weight group "
              "c mod C/8 (interleaved), as the authors' kernel does: docs/architecture.md §1")
    else:
        print(f"DISAGREEMENT, and not the c // 8 SKA grouping mistake either (error against that: "
              f"{result.blocked_grouping_error:.3g})")
    return 1


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except (UsageError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
