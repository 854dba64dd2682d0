"""python -m lsnet_ref.visualize {erf,aggregation,features}: the paper's Fig. 4-6 for an LSNet.

    python -m lsnet_ref.visualize erf --variant t --checkpoint lsnet_t.pth --images DIR --out DIR
    python -m lsnet_ref.visualize aggregation --variant t --device cuda
    python -m lsnet_ref.visualize features --variant test --input-size 72

Without --checkpoint the model is randomly initialised (seed 0; a warning says so and the figures are
labelled); without --images the demo dataset's validation images are used (generated on first use into
~/.cache/lsnet-ref). Images are taken spread evenly over the folder's sorted image files, resized to
--input-size squared (bicubic) and ImageNet-normalised. Each command prints what it measured and writes
into --out:

* erf: erf.npy, float64 (S, S) for --input-size S: the mean contribution scores (RepLKNet's saved
  matrix); erf.png, 700 x 600 px.
* aggregation: aggregation.npy, float64 (N, h, w) for N images and the LSConv's h x w map;
  aggregation_NNN.png per image, 1000 x 500 px.
* features: lkp.npy, float32 (N, G, 9, h, w), the LKP's per-pixel kernels; ska.npy, float32 (N, C, h, w),
  the SKA output; features_NNN.png per image, 1500 x 500 px.
"""
import argparse
import os
import sys

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint
from ..env import CudaUnavailableError, require_cuda
from ..lsnet import checkpoint_filter, create_model
from . import draw
from .files import save_array
from .measure import (
    aggregation_map,
    find_lsconvs,
    high_contribution_areas,
    lsconv_internals,
    minimum_input_size,
    preprocess,
    stage_erf,
)

__all__ = ["VisualizeError", "build_parser", "main"]

EXIT_ERROR = 2
VARIANTS = ("t", "s", "b", "test")
# Per command: (--num-images, --input-size) defaults. The ERF follows RepLKNet's tool (50 images at 1024 px);
# the maps are looked at image by image, at the size the models are trained for.
DEFAULTS = {"erf": (50, 1024), "aggregation": (4, 224), "features": (1, 224)}


class VisualizeError(ValueError):
    """A bad argument, folder or checkpoint: reported as one "error:" line."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--variant", choices=VARIANTS, default="t", help="LSNet variant (default: t)")
    common.add_argument("--checkpoint", metavar="FILE",
                        help="weights (the authors' .pth, ours, .npz or .safetensors); default: random init, seed 0")
    common.add_argument("--images", metavar="DIR",
                        help="folder searched recursively for .jpeg/.jpg/.png/.bmp/.webp files "
                             "(default: the demo dataset's val/ images)")
    common.add_argument("--out", metavar="DIR", default=os.path.join("output", "visualize"),
                        help="folder for the PNG figures and .npy arrays (default: output/visualize)")
    common.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")

    parser = argparse.ArgumentParser(
        prog="python -m lsnet_ref.visualize", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{erf,aggregation,features}")
    helps = {
        "erf": ("effective receptive field of a stage output, as RepLKNet's tools compute it",
                "the stage whose output is measured (default: 3)"),
        "aggregation": ("total |SKA coefficient| each position receives, for the last LSConv of a stage",
                        "the stage whose last LSConv is measured (default: 3, or the last stage holding one)"),
        "features": ("LKP and SKA outputs of the first LSConv of a stage",
                     "the stage whose first LSConv is shown (default: the first stage holding one)"),
    }
    for name, (text, stage_help) in helps.items():
        images, size = DEFAULTS[name]
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument("--num-images", type=_positive_int, default=images, metavar="N",
                         help=f"images to use (default: {images})")
        sub.add_argument("--input-size", type=_positive_int, default=size, metavar="S",
                         help=f"side the images are resized to (default: {size})")
        sub.add_argument("--stage", type=int, choices=(1, 2, 3, 4), help=stage_help)
    return parser


def build_model(args):
    """The variant in eval mode on args.device, with its weights, and a label saying where they came from."""
    name = f"lsnet_{args.variant}"
    if args.checkpoint is None:
        print(f"warning: no --checkpoint: {name} is randomly initialised (seed 0); the figures show an "
              "untrained network", file=sys.stderr)
        model, label = create_model(name, seed=0), f"{name}, random init"
    else:
        try:
            state = load_checkpoint(args.checkpoint)
        except (CheckpointError, OSError) as error:
            raise VisualizeError(f"--checkpoint {args.checkpoint}: {error}") from None
        # the head does not enter the measurements, but it must match for a strict load
        head = state.get("head.l.weight")
        num_classes = 0 if head is None else head.shape[0]
        suffix = "_distill" if "head_dist.l.weight" in state else ""
        model = create_model(name + suffix, num_classes=num_classes)
        try:
            model.load_state_dict(checkpoint_filter(state, model))
        except ValueError as error:
            problems = str(error).splitlines()[1:] or [str(error)]  # load_state_dict lists one problem per line
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VisualizeError(
                f"--checkpoint {args.checkpoint} does not fit {name}: {problems[0].strip()}{more}"
            ) from None
        label = f"{name}, {os.path.basename(args.checkpoint)}"
    return model.eval().to(device=args.device), label


def choose_stage(args, lsconvs, name):
    """The stage a command looks at: --stage, or the command's default."""
    if args.command == "erf":
        return 3 if args.stage is None else args.stage
    if args.stage is None:
        return max(lsconvs) if args.command == "aggregation" else min(lsconvs)
    if args.stage not in lsconvs:
        raise VisualizeError(
            f"--stage {args.stage}: stage {args.stage} of {name} has no LSConv; stages with one: "
            f"{', '.join(map(str, sorted(lsconvs)))}"
        )
    return args.stage


def check_input_size(args, stage, name):
    smallest = minimum_input_size(stage)
    if args.input_size < smallest:
        raise VisualizeError(
            f"--input-size {args.input_size} is smaller than {smallest}, the smallest input that gives stage "
            f"{stage} of {name} a 3 x 3 map (the network downsamples by {2 ** (2 + stage)} there)"
        )


def image_paths(args):
    """--images' image files (or the demo dataset's), spread evenly over the sorted list, --num-images of them."""
    from train.data import IMAGE_EXTENSIONS

    if args.images is None:
        from train.demo import demo_dataset

        folder = os.fspath(demo_dataset() / "val")
    else:
        folder = args.images
        if not os.path.isdir(folder):
            raise VisualizeError(f"--images {folder}: no such folder")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise VisualizeError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below")
    if args.num_images < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, args.num_images).round().astype(int)]
    return paths


def load_images(paths, size):
    """(uint8 (N, S, S, 3) pixels, float32 (N, 3, S, S) network inputs) of the images at `paths`."""
    from train.data import load_image

    pixels, inputs = [], []
    for path in paths:
        try:
            image = load_image(path)
        except Exception as error:  # whatever Pillow raises for this file
            raise VisualizeError(f"--images: cannot read {path}: {error}") from None
        shown, normalised = preprocess(image, size)
        pixels.append(shown)
        inputs.append(normalised)
    return np.stack(pixels), np.stack(inputs)


def run_erf(args, model, label, stage, inputs):
    erf = stage_erf(model, inputs, stage, args.device)
    save_array(os.path.join(args.out, "erf.npy"), erf)
    title = f"ERF of {label}, stage {stage} output\n{len(inputs)} images at {args.input_size} px"
    areas = high_contribution_areas(erf)
    draw.draw_erf(os.path.join(args.out, "erf.png"), erf, title, areas)
    print(f"ERF of {label}, stage {stage} output, over {len(inputs)} images at {args.input_size} px: "
          f"contribution max {erf.max():.4g}, min {erf.min():.4g}")
    print("high-contribution area ratio (smallest centred square holding more than t of log10(erf + 1) / max):")
    for fraction, side, ratio in areas:
        if side is None:
            print(f"  t = {fraction:.2f}: none (the ERF is zero everywhere)")
        else:
            print(f"  t = {fraction:.2f}: side {side} px, area ratio {ratio:.4f}")


def run_maps(args, model, label, stage, lsconvs, paths, pixels, inputs):
    """aggregation and features: both look inside one LSConv of `stage`."""
    index = -1 if args.command == "aggregation" else 0
    name, lsconv = lsconvs[stage][index]
    x, w, y = lsconv_internals(model, lsconv, stage, inputs, args.device)
    groups, height, width = w.shape[1], w.shape[3], w.shape[4]
    print(f"{args.command} of {label}: LSConv {name} on {x.shape[1]} channels, {height} x {width} map, "
          f"{groups} kernel groups")
    if args.command == "aggregation":
        maps = aggregation_map(w, x.shape[1])
        save_array(os.path.join(args.out, "aggregation.npy"), maps)
    else:
        save_array(os.path.join(args.out, "lkp.npy"), w)
        save_array(os.path.join(args.out, "ska.npy"), y)
    for k, path in enumerate(paths):
        figure = os.path.join(args.out, f"{args.command}_{k:03d}.png")
        if args.command == "aggregation":
            values = maps[k]
            peak = np.unravel_index(values.argmax(), values.shape)
            print(f"  {path}: total |coefficient| per position mean {values.mean():.4g}, "
                  f"max {values.max():.4g} at {tuple(int(i) for i in peak)}, min {values.min():.4g}")
            draw.draw_aggregation(figure, pixels[k], values, f"{label}\n{name}")
        else:
            lkp_map, ska_map = np.abs(w[k]).mean(axis=(0, 1)), np.abs(y[k]).mean(axis=0)
            print(f"  {path}: mean |LKP kernel| {lkp_map.mean():.4g}, mean |SKA output| {ska_map.mean():.4g}")
            draw.draw_features(figure, pixels[k], lkp_map, ska_map, f"{label}\n{name}")


def run(args):
    draw.require_matplotlib()  # before any measuring, which may take minutes
    if args.device == "cuda":
        require_cuda()
    model, label = build_model(args)
    name = f"lsnet_{args.variant}"
    lsconvs = find_lsconvs(model)
    stage = choose_stage(args, lsconvs, name)
    check_input_size(args, stage, name)
    paths = image_paths(args)
    pixels, inputs = load_images(paths, args.input_size)
    os.makedirs(args.out, exist_ok=True)
    if args.command == "erf":
        run_erf(args, model, label, stage, inputs)
    else:
        run_maps(args, model, label, stage, lsconvs, paths, pixels, inputs)
    print(f"wrote {args.command} figures and arrays to {args.out}")


def main(argv=None):
    """The command line: 0 on success, 2 on an error (one "error:" line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (VisualizeError, CudaUnavailableError, draw.MatplotlibMissingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0
