"""Train LSNet on ImageNet-1K with the authors' recipe (docs/architecture.md §6), or on a built-in demo dataset.

    python -m train.imagenet --variant t --device cpu                      # the demo dataset
    python -m train.imagenet --variant t --device cuda --data-path /data/imagenet

The data folder holds train/<class>/*.JPEG and val/<class>/*.JPEG. Every epoch writes
<output-dir>/checkpoint.pth (atomically; best.pth too when top-1 improves) and appends one JSON
line to <output-dir>/log.txt. --output-dir defaults to output/lsnet_<variant>; a new run refuses a
folder that already holds a run unless --resume continues it or --overwrite replaces it. --resume
continues a run exactly where it stopped; --eval --resume FILE reports top-1/top-5 of a checkpoint,
the authors' files included.

Ctrl-C stops at the next step boundary: the current optimizer update (all its accumulation batches,
clipping, AdamW and EMA) finishes, checkpoint.pth records where the run stands, and the command
exits with status 130. A second Ctrl-C stops at once and saves nothing (the last checkpoint stays as
it was); while a file is being written, it waits for the write to end. Errors print one line,
"error: ...", and exit with status 2.

All randomness derives from --seed: a sample's augmentation from (seed, epoch, position), so a run
resumed from a checkpoint ends with the same weights as one that never stopped.

    mpiexec -n 8 python -m train.imagenet --variant t --device cuda --data-path /data/imagenet

runs 8 data-parallel processes (train/distributed.py; README.md, "Several processes and machines"): each
trains on --batch-size images of every step, the gradients are averaged, and rank 0 alone prints and writes.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback

import numpy as np

import lsnet_ref as L
from lsnet_ref import checkpoint as ckpt
from lsnet_ref.env import CudaUnavailableError, require_cuda
from lsnet_ref.optim import AdamW, CosineSchedule, ModelEMA, param_groups_weight_decay

from .data import ImageFolder, Loader, RandomSampler, RepeatedAugmentSampler, SequentialSampler, check_readable
from .demo import demo_dataset
from .distributed import ONE_PROCESS, DistributedError, process_group
from .engine import Criterion, Interrupted, NoImages, NonFiniteLoss, evaluate, train_one_epoch
from .mixup import Mixup
from .transforms import build_eval_transform, build_train_transform

RECIPE = dict(epochs=300, batch_size=256, input_size=224, lr=1e-3, warmup_epochs=5, model_ema_decay=0.99996,
              mixup=0.8, cutmix=1.0, reprob=0.25, aa="rand-m9-mstd0.5-inc1", repeated_aug=True)
# The demo: small images, a short brisk schedule and light augmentation (crop, flip, colour jitter), so
# that accuracy visibly climbs within minutes on 2 cores; the recipe's mixup, cutmix, RandAugment,
# erasing and repeated augmentation slow learning from scratch on 2,600 images to a crawl.
DEMO = dict(epochs=15, batch_size=64, input_size=64, lr=1.6e-2, warmup_epochs=1, model_ema_decay=0.99,
            mixup=0.0, cutmix=0.0, reprob=0.0, aa="none", repeated_aug=False)
# --variant test on the demo data: a smoke test of the whole pipeline that takes about a minute even in
# Numba's CUDA simulator (every GPU thread in Python): one training and one validation image per class.
SMOKE = dict(DEMO, epochs=1, batch_size=2, input_size=32)
SMOKE_PER_CLASS = (1, 1)
WEIGHT_DECAY = {"t": 0.025, "s": 0.025, "b": 0.05, "test": 0.025}
RUN_FILES = ("checkpoint.pth", "best.pth", "log.txt")  # what a run leaves in --output-dir
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130  # 130: the shell's status for a command stopped by SIGINT
# Before MPI_Abort, time for the launcher to pass on the message (mpiexec drops output still in flight on an abort).
ABORT_DELAY_S = 0.5


class TrainingError(Exception):
    """A problem found before or during training, reported as one clear message."""


class Stopped(Exception):
    """Training stopped by Ctrl-C; the message says what was saved and how to continue."""


class CtrlCHandler:
    """SIGINT while training, as a context manager that restores the previous handler on exit.

    The first Ctrl-C only sets a flag (stop_requested): training stops at the next step boundary. A
    second raises KeyboardInterrupt at once, unless files are being written (`deferred()`): then it
    is raised when the writing ends. A process that ignores SIGINT (started with `&` by a script)
    keeps ignoring it. `announce`: say so on stderr at the first press (rank 0 only, where mpiexec
    passes Ctrl-C on to every process).
    """

    def __init__(self, announce=True):
        self.presses = 0
        self.writing = False
        self.announce = announce

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        if self.previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGINT, self.previous)

    def stop_requested(self):
        return self.presses > 0

    def handle(self, signum, frame):
        self.presses += 1
        if self.presses == 1:
            if self.announce:
                # os.write: print could re-enter a stderr write (a progress bar's) that the signal interrupted
                os.write(2, b"\nCtrl-C: stopping after the current step to save a checkpoint; "
                            b"Ctrl-C again stops at once without saving\n")
        elif not self.writing:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        """A block during which a second Ctrl-C waits (checkpoint and log writes)."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.presses > 1:
            raise KeyboardInterrupt


def preset_default(name):
    """' (default: <recipe>; demo <demo>)' for a flag whose default depends on --data-path."""
    return f" (default: {RECIPE[name]}; demo {DEMO[name]})"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m train.imagenet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Grouped in --help as timm's train.py groups its flags.
    add = parser.add_argument_group("data").add_argument
    add("--data-path", default="demo",
        help="ImageNet-style folder with train/ and val/, or 'demo' for the built-in dataset (default: %(default)s)")
    add("--input-size", type=int, help=f"crop side{preset_default('input_size')}")
    add("--batch-size", type=int, help=f"images per step{preset_default('batch_size')}")
    add("--workers", type=int, default=4, help="decoding threads (default: %(default)s)")

    add = parser.add_argument_group("model").add_argument
    add("--variant", choices=("t", "s", "b", "test"), default="t",
        help="LSNet-T, -S or -B; 'test' is lsnet_test, a tiny network with every block kind for smoke tests, "
             "72 px unless --input-size says otherwise; on the demo data it trains 1 epoch on 1 training and 1 "
             "validation image per class at 32 px, batch 2, about a minute even in Numba's CUDA simulator "
             "(default: %(default)s)")
    for knob in ("embed-dim", "depth", "num-heads", "key-dim"):
        add(f"--{knob}", type=int, nargs=4, metavar="N",
            help=f"override the variant's per-stage {knob.replace('-', ' ')} (experiments; default: the variant's)")
    add("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default: %(default)s)")
    add("--dtype", choices=("float32", "float64"), default="float32",
        help="precision of the weights and of every computation; float64 for reference runs that compare "
             "devices or implementations (default: %(default)s)")
    add("--tf32", action="store_true",
        help="let float32 matrix products on the GPU use TF32 tensor cores (cuBLAS): faster, but inputs rounded to "
             "10 mantissa bits, so no longer equal to the CPU (default: FP32)")

    add = parser.add_argument_group("optimisation").add_argument
    add("--epochs", type=int, help=f"epochs{preset_default('epochs')}")
    add("--accum-steps", type=int, default=1,
        help="batches per optimizer update, to reach the recipe's batch on one device (default: %(default)s)")
    add("--lr", type=float,
        help="learning rate per 512 images, scaled by batch-size x accum-steps x processes / 512"
             f"{preset_default('lr')}")
    add("--weight-decay", type=float, help="AdamW weight decay (default: 0.025 for t and s, 0.05 for b)")
    add("--warmup-epochs", type=float, help=f"linear warmup{preset_default('warmup_epochs')}")
    add("--warmup-lr", type=float, default=1e-6, help="learning rate at the start of warmup (default: %(default)s)")
    add("--min-lr", type=float, default=1e-5, help="learning rate at the end of the cosine (default: %(default)s)")
    add("--clip-grad", type=float, default=0.02, help="gradient clipping value, 0 disables (default: %(default)s)")
    add("--clip-mode", choices=("agc", "norm", "value"), default="agc", help="clipping kind (default: %(default)s)")
    add("--model-ema-decay", type=float,
        help=f"EMA decay of the weights{preset_default('model_ema_decay')}")
    add("--no-model-ema", dest="model_ema", action="store_false", help="do not keep an EMA of the weights")

    add = parser.add_argument_group("augmentation").add_argument
    add("--aa", help=f"RandAugment policy, 'none' disables (then colour jitter applies){preset_default('aa')}")
    add("--color-jitter", type=float, default=0.4,
        help="colour jitter strength, used only without --aa, as in timm (default: %(default)s)")
    add("--reprob", type=float, help=f"random erasing probability, pixel mode{preset_default('reprob')}")
    add("--mixup", type=float, help=f"mixup alpha, 0 disables{preset_default('mixup')}")
    add("--cutmix", type=float, help=f"cutmix alpha, 0 disables{preset_default('cutmix')}")
    add("--mixup-switch-prob", type=float, default=0.5,
        help="probability of cutmix when both are on (default: %(default)s)")
    add("--smoothing", type=float, default=0.1, help="label smoothing (default: %(default)s)")
    add("--repeated-aug", dest="repeated_aug", action=argparse.BooleanOptionalAction,
        help=f"repeated-augmentation sampler, 3 repeats{preset_default('repeated_aug')}")

    add = parser.add_argument_group("distillation").add_argument
    add("--distillation-type", choices=("none", "hard"), default="none",
        help="hard: half the loss from head_dist against the teacher's argmax (default: %(default)s)")
    add("--teacher-path", help="LSNet checkpoint of the teacher (needed with --distillation-type hard)")

    add = parser.add_argument_group("checkpoints and run control").add_argument
    add("--output-dir", help="where checkpoints and log.txt go; a folder holding a run is refused unless "
                             "--resume or --overwrite is given (default: output/lsnet_<variant>)")
    add("--overwrite", action="store_true",
        help="start afresh in an --output-dir that holds a run: its checkpoint.pth, best.pth and log.txt are deleted")
    add("--resume", help="checkpoint to continue from (or to evaluate with --eval)")
    add("--eval", action="store_true", help="only evaluate the --resume checkpoint on the val set")
    add("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add("--print-freq", type=int, default=10,
        help="batches between reads of the loss from the device (the only wait on the GPU inside an epoch); a NaN "
             "loss stops the run at the next read (default: %(default)s)")

    add = parser.add_argument_group("several processes (mpiexec -n N python -m train.imagenet ...)").add_argument
    add("--sync-bn", action="store_true",
        help="BatchNorm statistics over the images of all processes while training (default: each process's own, "
             "as the authors trained)")
    return parser


def resolve(args, world_size=1):
    """Fill the defaults that depend on the dataset and variant; check the arguments. `world_size`: the
    processes of a data-parallel run, whose batches together make a step."""
    if args.variant == "test" and args.input_size is None and not smoke_test(args):
        args.input_size = L.lsnet.default_img_sizes["lsnet_test"]
    preset = SMOKE if smoke_test(args) else DEMO if args.data_path == "demo" else RECIPE
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.weight_decay is None:
        args.weight_decay = WEIGHT_DECAY[args.variant]
    if args.output_dir is None:
        args.output_dir = os.path.join("output", f"lsnet_{args.variant}")
    for name in ("epochs", "batch_size", "accum_steps", "input_size", "workers"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    check_numbers(args)
    check_architecture(args)
    try:  # builds RandAugment from the --aa string, which checks it
        build_train_transform(args.input_size, auto_augment=None if args.aa == "none" else args.aa,
                              color_jitter=args.color_jitter, reprob=args.reprob)
    except ValueError as error:
        raise TrainingError(f"--aa {args.aa}: {error}") from None
    if args.distillation_type == "hard" and not args.teacher_path:
        raise TrainingError("--distillation-type hard needs --teacher-path (an LSNet checkpoint)")
    if args.eval and not args.resume:
        raise TrainingError("--eval needs --resume FILE: the checkpoint to evaluate")
    if args.overwrite and args.resume:
        raise TrainingError("--overwrite starts a new run; it cannot go with --resume")
    args.world_size = world_size
    args.scaled_lr = args.lr * args.batch_size * args.accum_steps * world_size / 512.0
    return args


def check_numbers(args):
    """The float flags' ranges (NaN and infinities refused) and the seed's."""
    def check(name, accepted, rule):
        value = getattr(args, name)
        if not (math.isfinite(value) and accepted(value)):
            raise TrainingError(f"--{name.replace('_', '-')} must be {rule}; got {value}")

    for name in ("lr", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "mixup", "cutmix", "color_jitter",
                 "clip_grad"):
        check(name, lambda value: value >= 0, "a number >= 0")
    check("smoothing", lambda value: 0 <= value < 1, "in [0, 1)")
    for name in ("reprob", "mixup_switch_prob", "model_ema_decay"):
        check(name, lambda value: 0 <= value <= 1, "in [0, 1]")
    if not 0 <= args.seed < 2**63:
        raise TrainingError(f"--seed must be in [0, 2**63); got {args.seed}")
    if args.print_freq < 1:
        raise TrainingError(f"--print-freq must be >= 1; got {args.print_freq}")


def check_architecture(args):
    """What LSNet's layers need of the per-stage widths, heads, key widths and depths (the model would
    fail with a ZeroDivisionError or a shape error deep inside otherwise)."""
    cfg = {**L.lsnet.model_cfgs[f"lsnet_{args.variant}"], **architecture(args)}
    for knob in ("embed_dim", "num_heads", "key_dim"):
        if min(cfg[knob]) < 1:
            raise TrainingError(f"--{knob.replace('_', '-')} must be positive; got {' '.join(map(str, cfg[knob]))}")
    dims, depth, heads, key_dims = cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["key_dim"]
    if min(depth) < 0 or sum(depth) == 0:
        raise TrainingError(f"--depth must be >= 0 with at least one block; got {' '.join(map(str, depth))}")
    if dims[0] < 4:
        raise TrainingError(f"--embed-dim: stage 1 needs at least 4 channels (the patch embedding starts with a "
                            f"quarter of them); got {dims[0]}")
    for stage in range(3):
        if depth[stage] >= 2 and dims[stage] % 8:  # block 1, 3, ... of stages 1-3 is an LS convolution
            raise TrainingError(f"--embed-dim: stage {stage + 1} has LS convolutions (depth >= 2), which need a "
                                f"width divisible by 8 (one 3x3 kernel per 8 channels); got {dims[stage]}")
    # block 1, 3, ... of stage 4 is attention, whose value width per head is int(dim / heads) as LSNet computes it
    if depth[3] >= 2 and int(dims[3] / (key_dims[3] * heads[3]) * key_dims[3]) < 1:
        raise TrainingError(f"--embed-dim / --num-heads: stage 4 attention needs at least one channel per head; "
                            f"got width {dims[3]} for {heads[3]} heads")


def smoke_test(args):
    return args.variant == "test" and args.data_path == "demo"


def open_datasets(args):
    if args.data_path == "demo":
        root = demo_dataset(per_class=SMOKE_PER_CLASS) if smoke_test(args) else demo_dataset()
    else:
        root = args.data_path
    if not os.path.isdir(root):
        raise TrainingError(f"--data-path {root}: no such folder")
    try:
        train_set = None if args.eval else ImageFolder(os.path.join(root, "train"))
        val_set = ImageFolder(os.path.join(root, "val"))
    except ValueError as error:
        raise TrainingError(f"--data-path {root}: {error}") from error
    if train_set is not None and train_set.classes != val_set.classes:
        raise TrainingError(f"--data-path {root}: train/ and val/ hold different classes")
    try:
        for dataset in (val_set, train_set):
            if dataset is not None:
                check_readable(dataset)
    except ValueError as error:
        raise TrainingError(f"--data-path {root}: {error}") from None
    return train_set, val_set


def load_weights(model, state, path, what):
    try:
        model.load_state_dict(L.lsnet.checkpoint_filter(state, model))
    except ValueError as error:
        problems = str(error).splitlines()[1:]  # load_state_dict lists one problem per line
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TrainingError(f"{path} does not fit {what}: {problems[0].strip() if problems else error}{more}") from None


def architecture(args):
    """The architecture overrides given on the command line."""
    knobs = ("embed_dim", "depth", "num_heads", "key_dim")
    return {knob: tuple(getattr(args, knob)) for knob in knobs if getattr(args, knob) is not None}


def build_teacher(path, num_classes, device):
    """The LSNet variant whose shapes match the checkpoint at `path`, in eval mode."""
    state = ckpt.extract_state_dict(read_checkpoint(path, "--teacher-path"), path=path)
    for name in L.list_models():
        model = L.create_model(name, num_classes=num_classes)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if all(k in state and state[k].shape == s for k, s in shapes.items() if not k.endswith("attention_bias_idxs")):
            load_weights(model, state, path, name)
            return model.eval().to(device=device)
    raise TrainingError(f"--teacher-path {path}: not an LSNet checkpoint with {num_classes} classes")


def read_checkpoint(path, flag):
    """The whole object stored at `path` (TrainingError naming `flag` when it cannot be read)."""
    try:
        stored = ckpt.load(path)
        ckpt.extract_state_dict(stored, path=path)
    except ckpt.CheckpointError as error:
        raise TrainingError(f"{flag}: {error}") from error
    return stored


def check_output_dir(args):
    """Refuse an --output-dir that is a file, or that holds a run when neither --resume nor --overwrite
    says what to do with it (before any data is read)."""
    folder = args.output_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise TrainingError(f"--output-dir {folder} is a file, not a folder")
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(folder, name))]
    if found and not (args.resume or args.overwrite):
        raise TrainingError(f"--output-dir {folder} already holds a run ({', '.join(found)}); --resume "
                            f"{os.path.join(folder, 'checkpoint.pth')} continues it, --overwrite starts afresh")


def prepare_output_dir(args):
    """Create --output-dir and check that files can be written in it (before any training); delete the
    temporary files of saves that were killed, and with --overwrite the previous run's files."""
    folder = args.output_dir
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        ckpt.remove_stale_temporaries(folder)
        if args.overwrite:
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
    except OSError as error:
        raise TrainingError(f"--output-dir {folder}: cannot write there ({error.strerror or error})") from None


def check_resume(args, resumed, start_epoch, start_batch):
    """Refuse a --resume that leaves nothing to train, or that changes the batch size or the number of
    processes mid-epoch (batch numbers would point elsewhere); returns the notice announcing such a change
    at an epoch boundary, else None."""
    if args.epochs <= start_epoch:
        raise TrainingError(f"--resume {args.resume} continues at epoch {start_epoch}; --epochs {args.epochs} "
                            "leaves nothing to train")
    saved = resumed.get("args")
    if not isinstance(saved, dict) or "batch_size" not in saved:  # the authors' checkpoints hold a Namespace
        return None
    before = (saved["batch_size"], saved.get("accum_steps", 1), saved.get("world_size", 1))
    now = (args.batch_size, args.accum_steps, args.world_size)
    if before == now:
        return None
    if start_batch:
        if before[2] != now[2]:
            raise TrainingError(f"--resume {args.resume} stopped at batch {start_batch} of epoch {start_epoch} of a "
                                f"run of {before[2]} processes (mpiexec -n {before[2]}); this run has {now[2]}: "
                                f"continue it with mpiexec -n {before[2]} (another number of processes can start "
                                "from an end-of-epoch checkpoint)")
        raise TrainingError(f"--resume {args.resume} stopped at batch {start_batch} of epoch {start_epoch} with "
                            f"--batch-size {before[0]} --accum-steps {before[1]}; continue with those (a new batch "
                            "size can start from an end-of-epoch checkpoint)")
    return (f"notice: {batch_text(*now)} instead of the checkpoint's {batch_text(*before)}: epochs {start_epoch} on "
            f"use the new batch (learning rate {args.scaled_lr:.2e}), so the run will not match one that kept the old "
            "batch")


def batch_text(batch_size, accum_steps, world_size):
    processes = f" on {world_size} processes" if world_size > 1 else ""
    return f"--batch-size {batch_size} --accum-steps {accum_steps}{processes}"


def append_log(folder, stats):
    path = os.path.join(folder, "log.txt")
    try:
        with open(path, "a") as log:
            log.write(json.dumps(stats) + "\n")
    except OSError as error:
        raise TrainingError(f"{path}: cannot write the log ({error.strerror or error})") from None


def kernel_cache_note():
    where = os.environ.get("NUMBA_CACHE_DIR") or "the __pycache__ folders under kernels/"
    return (f"kernels: compiled by Numba on first use (about a minute without output), loaded from the cache in "
            f"{where} after that")


def run(args, group=ONE_PROCESS):
    """Train (or with --eval, evaluate) as `args` say; in a data-parallel run every process of `group` calls it."""
    args = resolve(args, group.size)
    root = group.rank == 0  # the process that prints and writes
    progress = args.progress and root
    if args.device == "cuda":
        require_cuda()  # before any data is read
        from kernels.cuda.cublas import set_tf32

        set_tf32(args.tf32)
    elif args.tf32:
        raise TrainingError("--tf32 applies to --device cuda only")
    if not args.eval and root:
        check_output_dir(args)
    train_set, val_set = open_datasets(args)
    num_classes = len(val_set.classes)
    name = f"lsnet_{args.variant}" + ("_distill" if args.distillation_type == "hard" else "")
    model = L.create_model(name, num_classes=num_classes, img_size=args.input_size, seed=args.seed,
                           **architecture(args)).to(dtype=args.dtype)
    resumed = None
    if args.resume:
        stored = read_checkpoint(args.resume, "--resume")
        load_weights(model, ckpt.extract_state_dict(stored, path=args.resume), args.resume, name)
        resumed = stored if "optimizer" in stored and not args.eval else None
    group.broadcast_state(model)
    model.to(device=args.device)
    val_loader = Loader(val_set, SequentialSampler(len(val_set)), args.batch_size,
                        build_eval_transform(args.input_size), workers=args.workers, drop_last=False,
                        num_replicas=group.size, rank=group.rank)
    if args.eval:
        if root:
            print(kernel_cache_note())
        stats = evaluate(model, val_loader, device=args.device, progress=progress, group=group)
        unreadable = group.sum(val_loader.skipped)
        skipped = f" ({unreadable} unreadable ones skipped)" if unreadable else ""
        if root:
            print(f"{args.resume}: top-1 {stats['acc1']:.2f}%  top-5 {stats['acc5']:.2f}%  loss {stats['loss']:.4f} "
                  f"on {stats['images']} images{skipped}")
        return stats

    teacher = (build_teacher(args.teacher_path, num_classes, args.device).to(dtype=args.dtype)
               if args.distillation_type == "hard" else None)
    sampler = (RepeatedAugmentSampler(len(train_set), seed=args.seed) if args.repeated_aug
               else RandomSampler(len(train_set), seed=args.seed))
    transform = build_train_transform(args.input_size, auto_augment=None if args.aa == "none" else args.aa,
                                      color_jitter=args.color_jitter, reprob=args.reprob)
    train_loader = Loader(train_set, sampler, args.batch_size, transform, workers=args.workers, seed=args.seed,
                          num_replicas=group.size, rank=group.rank)
    steps_per_epoch = len(train_loader) // args.accum_steps
    if steps_per_epoch < 1:
        step_images = args.batch_size * args.accum_steps * group.size
        processes = (f" (--batch-size {args.batch_size} x --accum-steps {args.accum_steps} x {group.size} processes)"
                     if group.size > 1 else "")
        raise TrainingError(f"{len(train_set)} training images make no full step of {step_images}{processes}")
    mixing = args.mixup > 0 or args.cutmix > 0
    mixup = Mixup(args.mixup, args.cutmix, switch_prob=args.mixup_switch_prob, label_smoothing=args.smoothing,
                  num_classes=num_classes) if mixing else None
    criterion = Criterion(args.smoothing, mixing, teacher)
    optimizer = AdamW(param_groups_weight_decay(model, args.weight_decay, model.no_weight_decay()),
                      lr=args.scaled_lr, betas=(0.9, 0.999), eps=1e-8)
    schedule = CosineSchedule(args.scaled_lr, args.epochs, steps_per_epoch, args.warmup_epochs, args.warmup_lr,
                              args.min_lr)
    ema = ModelEMA(model, args.model_ema_decay) if args.model_ema else None
    if args.sync_bn and group.size > 1:  # after the EMA's copy: the EMA evaluates, and never trains
        for module in model.modules():
            if isinstance(module, L.modules._BatchNorm):
                module.sum_over_processes = group.sum_host
    n_parameters = L.count_params(model)

    start_epoch, start_batch, max_accuracy = 0, 0, 0.0
    resumed_losses, resumed_skipped = [], 0  # of the batches before start_batch (all processes' skipped images)
    if resumed is not None:
        start_epoch, start_batch = resumed["epoch"] + 1, resumed.get("next_batch", 0)
        notice = check_resume(args, resumed, start_epoch, start_batch)
        if notice and root:
            print(notice, file=sys.stderr)
        optimizer.load_state_dict(resumed["optimizer"])
        if ema is not None and "model_ema" in resumed:
            load_weights(ema.module, resumed["model_ema"], args.resume, f"{name} (EMA)")
        max_accuracy = resumed.get("max_accuracy", 0.0)
        resumed_losses = [float(value) for value in resumed.get("epoch_losses", [])]
        if "epoch_loss_counts" in resumed:  # a run of several processes: theirs one after another
            starts = np.cumsum([0, *resumed["epoch_loss_counts"]])
            resumed_losses = resumed_losses[starts[group.rank]:starts[group.rank + 1]]
        resumed_skipped = int(resumed.get("epoch_skipped", 0))

    if root:
        prepare_output_dir(args)
    checkpoint_path = os.path.join(args.output_dir, "checkpoint.pth")

    def save(path, epoch, next_batch, losses_by_rank=(), skipped=0):
        """Write a checkpoint from rank 0. `losses_by_rank`: each process's losses of the epoch so far."""
        if not root:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "next_batch": next_batch, "max_accuracy": max_accuracy, "seed": args.seed, "model_name": name,
                 "n_parameters": n_parameters, "args": {k: v for k, v in vars(args).items()}}
        if ema is not None:
            state["model_ema"] = ema.module.state_dict()
        if next_batch:  # mid-epoch: the epoch's losses and skipped images so far, for its log line
            losses = [value for share in losses_by_rank for value in share]
            state.update(epoch_losses=np.asarray(losses, np.float64), epoch_skipped=skipped)
            if group.size > 1:
                state["epoch_loss_counts"] = np.asarray([len(share) for share in losses_by_rank], np.int64)
        try:
            ckpt.save(state, path)
        except ckpt.CheckpointWriteError as error:
            raise TrainingError(str(error)) from None

    def stop_requested():  # one answer for all processes, so that they stop at the same step
        return group.any(ctrl_c.stop_requested())

    if root:
        print(f"{name}: {n_parameters:,} parameters, {len(train_set)} training / {len(val_set)} validation images, "
              f"{num_classes} classes, {steps_per_epoch} steps per epoch on {args.device}"
              + (f", {group.size} processes" if group.size > 1 else ""))
        print(kernel_cache_note())
    stats = {}
    with CtrlCHandler(announce=root) as ctrl_c:
        try:
            for epoch in range(start_epoch, args.epochs):
                resuming = epoch == start_epoch
                losses = resumed_losses if resuming else []
                started = time.perf_counter()
                train_before, val_before = train_loader.skipped, val_loader.skipped

                def train_skipped():  # over all processes, a resumed epoch's part before the checkpoint included
                    return group.sum(train_loader.skipped - train_before) + (resumed_skipped if resuming else 0)

                try:
                    train_stats = train_one_epoch(
                        model, criterion, train_loader, optimizer, schedule, epoch, device=args.device, mixup=mixup,
                        clip_grad=args.clip_grad or None, clip_mode=args.clip_mode, ema=ema,
                        accum_steps=args.accum_steps, seed=args.seed, start_batch=start_batch if resuming else 0,
                        losses=losses, stop_requested=stop_requested, progress=progress,
                        print_freq=args.print_freq, group=group)
                    test_stats = evaluate(model, val_loader, device=args.device, stop_requested=stop_requested,
                                          progress=progress, group=group)
                    val_skipped = group.sum(val_loader.skipped - val_before)
                    ema_stats = (evaluate(ema.module, val_loader, device=args.device, stop_requested=stop_requested,
                                          progress=progress, group=group)
                                 if ema is not None else None)
                except Interrupted as stop:  # next_batch None: evaluation stopped, after the epoch's training
                    next_batch = steps_per_epoch * args.accum_steps if stop.next_batch is None else stop.next_batch
                    losses_by_rank, skipped = group.gather(losses), train_skipped()
                    with ctrl_c.deferred():
                        save(checkpoint_path, epoch - 1, next_batch, losses_by_rank, skipped)
                    continuation = f"--resume {checkpoint_path} continues at epoch {epoch}, batch {next_batch}"
                    raise Stopped(continuation) from None
                except NonFiniteLoss as error:
                    raise TrainingError(
                        f"{error}; the last good checkpoint in {args.output_dir} is untouched") from None
                except NoImages as error:
                    raise TrainingError(f"{error}: {train_skipped()} training and "
                                        f"{group.sum(val_loader.skipped - val_before)} validation images were "
                                        "unreadable this epoch (the warnings name them)") from None
                stats = {**{f"train_{k}": v for k, v in train_stats.items()},
                         **{f"test_{k}": v for k, v in test_stats.items()}}
                if ema is not None:
                    stats["test_ema_acc1"] = ema_stats["acc1"]
                epoch_skipped = train_skipped()
                stats.update(epoch=epoch, n_parameters=n_parameters, skipped_images=epoch_skipped)
                improved = test_stats["acc1"] > max_accuracy
                max_accuracy = max(max_accuracy, test_stats["acc1"])
                with ctrl_c.deferred():
                    save(checkpoint_path, epoch, 0)
                    if improved:
                        save(os.path.join(args.output_dir, "best.pth"), epoch, 0)
                    if root:
                        append_log(args.output_dir, stats)
                ema_text = f", EMA {stats['test_ema_acc1']:.1f}%" if ema is not None else ""
                if root:
                    print(f"epoch {epoch}: train loss {train_stats['loss']:.4f}, lr {train_stats['lr']:.2e}, "
                          f"val top-1 {test_stats['acc1']:.1f}% (best {max_accuracy:.1f}%{ema_text}), "
                          f"top-5 {test_stats['acc5']:.1f}%, unreadable images skipped: {epoch_skipped} train, "
                          f"{val_skipped} val, {time.perf_counter() - started:.0f} s")
        except KeyboardInterrupt:
            last = (f"--resume {checkpoint_path} continues from the last checkpoint" if os.path.exists(checkpoint_path)
                    else "no checkpoint was written")
            raise Stopped(f"stopped at once by a second Ctrl-C, losing the work since the last checkpoint; "
                          f"{last}") from None
    return stats


def one_line(error):
    """An exception's message on one line (a library's message may span several)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv=None):
    """The command line: 0 when training or evaluation ends, 2 on an error, 130 when Ctrl-C stopped it.

    In a data-parallel run, an error or an exception in any process is reported by that process (its rank
    named), which then ends them all (MPI_Abort): the others may be waiting for it in a collective.
    """
    args = build_parser().parse_args(argv)
    group = ONE_PROCESS
    try:
        group = process_group(args.device)
        run(args, group)
    except (TrainingError, CudaUnavailableError, DistributedError) as error:
        return fail(group, f"error: {one_line(error)}", EXIT_ERROR)
    except Stopped as stop:  # every process stopped at the same step; rank 0 saved
        if group.rank == 0:
            print(f"interrupted: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return fail(group, "interrupted", EXIT_INTERRUPTED)
    except BaseException:
        if group.size == 1:
            raise
        return fail(group, "error: the exception above ended this process; ending all of them", EXIT_ERROR,
                    traceback.format_exc())
    return 0


def fail(group, message, status, details=""):
    """Print `details` then `message` (naming the rank in a data-parallel run, then ending every process);
    returns `status`."""
    if group.size == 1:
        print(f"{details}{message}", file=sys.stderr)
        return status
    print(f"{details}rank {group.rank} of {group.size}: {message}", file=sys.stderr, flush=True)  # one write
    time.sleep(ABORT_DELAY_S)
    group.abort(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
