"""Launch geometry shared by the CUDA kernels, and the block-wide reduction they use."""
from numba import config, cuda

# Threads per block for 1-D launches: a power of two (the tree reduction halves it). The simulator
# runs one OS thread per GPU thread, so it gets small blocks to keep each launch quick.
THREADS = 32 if config.ENABLE_CUDASIM else 256


def blocks(count, threads=THREADS):
    """Blocks of `threads` covering `count` items (at least one)."""
    return max(1, (count + threads - 1) // threads)


@cuda.jit(device=True)
def unravel_4d(n, size1, size2, size3):
    """The (i0, i1, i2, i3) of flat index n in a C-contiguous array of shape (any, size1, size2, size3)."""
    i3 = n % size3
    i2 = (n // size3) % size2
    i1 = (n // (size3 * size2)) % size1
    return n // (size3 * size2 * size1), i1, i2, i3


@cuda.jit(device=True)
def block_sum(shared, value):
    """Sum `value` over the block's THREADS threads through `shared` (THREADS long), in a fixed order.

    Every thread of the block must call it (it synchronises); every thread gets the sum.
    """
    t = cuda.threadIdx.x
    shared[t] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step:
            shared[t] += shared[t + step]
        cuda.syncthreads()
        step //= 2
    total = shared[0]
    cuda.syncthreads()
    return total
