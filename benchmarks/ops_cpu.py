"""Time each LSNet op here and in PyTorch on the same CPU, same thread count, same run.

    python benchmarks/ops_cpu.py [--batch 32] [--repeats 20]

Prints, per op and shape, the best-of-N wall time of the forward pass and of forward+backward (the
backward of every input gradient), and our time over PyTorch's (below 1 means faster).
Shapes are the ones LSNet meets at 224 input.
"""
import argparse
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F

import lsnet_ref as L


def torch_ska(x, w):
    b, c, h, width = x.shape
    groups = w.shape[1]
    columns = F.unfold(x, 3, padding=1).reshape(b, c, 9, h, width)
    return (columns * w[:, torch.arange(c) % groups]).sum(2)


def torch_se(x, w1, b1, w2, b2):
    s = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), w1, b1))
    return x * torch.sigmoid(F.conv2d(s, w2, b2))


def torch_attention(q, k, v, biases, idxs, scale):
    attn = (q.transpose(-2, -1) @ k) * scale + biases[:, idxs]
    return v @ attn.softmax(dim=-1).transpose(-2, -1)


def cases(batch, rng):
    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    for c, side in ((128, 14), (256, 7), (128, 28)):
        yield (f"SKA {c}x{side}x{side}", L.ops.ska, torch_ska,
               [arr(batch, c, side, side), arr(batch, c // 8, 9, side, side)])
    for c, side in ((64, 14), (128, 7), (64, 28)):
        yield (f"depthwise 7x7 {c}x{side}x{side}", lambda x, w: L.ops.conv2d(x, w, padding=3, groups=x.shape[1]),
               lambda x, w: F.conv2d(x, w, padding=3, groups=x.shape[1]), [arr(batch, c, side, side), arr(c, 1, 7, 7)])
    for c, side in ((128, 14), (256, 7)):
        def ours_bn(x, g, b, c=c):
            return L.ops.batch_norm(x, L.Tensor(np.zeros(c, np.float32)), L.Tensor(np.ones(c, np.float32)), g, b, True)

        def torch_bn(x, g, b, c=c):
            return F.batch_norm(x, torch.zeros(c), torch.ones(c), g, b, True)

        yield f"BatchNorm2d train {c}x{side}x{side}", ours_bn, torch_bn, [arr(batch, c, side, side), arr(c), arr(c)]
        r = max(8, int(c / 4 + 4) // 8 * 8)
        yield (f"SE {c}x{side}x{side}", L.ops.squeeze_excite, torch_se,
               [arr(batch, c, side, side), arr(r, c, 1, 1, scale=0.1), arr(r), arr(c, r, 1, 1, scale=0.1), arr(c)])
    _, idxs = L.ops.attention_bias_index(4)
    for dv in (96,):
        yield (f"attention h4 d16 dv{dv} N16",
               lambda q, k, v, bias: L.ops.attention(q, k, v, bias, L.Tensor(idxs), 0.25),
               lambda q, k, v, bias: torch_attention(q, k, v, bias, torch.from_numpy(idxs), 0.25),
               [arr(batch, 4, 16, 16), arr(batch, 4, 16, 16), arr(batch, 4, dv, 16), arr(4, 16)])


def best_times(ours, theirs, repeats, rounds=5, settle=0.25):
    """Best-of-`repeats` wall times of two callables, run in alternating rounds of back-to-back calls
    so that a burst of load on a shared machine slows both sides alike. Each round starts `settle`
    seconds after the other side's: PyTorch's OpenMP threads keep spinning for a while after its
    calls and would slow ours."""
    for fn in (ours, theirs):
        fn()
        fn()
    times = ([], [])
    per_round = max(2, -(-repeats // rounds))
    for _ in range(rounds):
        for fn, kept in zip((ours, theirs), times):
            time.sleep(settle)
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                kept.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def run_ours(op, arrays, backward):
    inputs = [L.Tensor(a, requires_grad=backward) for a in arrays]
    y = op(*inputs)
    if backward:
        y.backward(np.ones(y.shape, y.dtype))


def run_torch(op, arrays, backward):
    inputs = [torch.from_numpy(a).requires_grad_(backward) for a in arrays]
    y = op(*inputs)
    if backward:
        y.backward(torch.ones_like(y))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    print(f"batch {args.batch}, float32, {threads} threads (Numba and PyTorch {torch.__version__}), "
          f"best of {args.repeats}")
    header = (f"| {'op':34} | {'ours fwd ms':>11} | {'torch fwd ms':>12} | {'ratio':>6} "
              f"| {'ours f+b ms':>11} | {'torch f+b ms':>12} | {'ratio':>6} |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    rng = np.random.default_rng(0)
    for name, ours, theirs, arrays in cases(args.batch, rng):
        with torch.no_grad(), L.no_grad():
            ours_fwd, torch_fwd = best_times(
                lambda: run_ours(ours, arrays, False), lambda: run_torch(theirs, arrays, False), args.repeats
            )
        ours_both, torch_both = best_times(
            lambda: run_ours(ours, arrays, True), lambda: run_torch(theirs, arrays, True), args.repeats
        )
        print(f"| {name:34} | {ours_fwd * 1e3:11.2f} | {torch_fwd * 1e3:12.2f} | {ours_fwd / torch_fwd:6.2f} "
              f"| {ours_both * 1e3:11.2f} | {torch_both * 1e3:12.2f} | {ours_both / torch_both:6.2f} |")


if __name__ == "__main__":
    main()
