"""The process group of a data-parallel run: `mpiexec -n N python -m train.imagenet ...` starts N copies of the
training, each on its own share of every step's images, which stay replicas of one another.

mpi4py is imported only when an MPI launcher started more than one process (its environment variables say how
many), so a plain `python -m train.imagenet` neither needs nor loads MPI. Everything on the host goes through MPI:
the initial weights (rank 0's), stop requests, counts, evaluation sums and, on CPUs, the gradient allreduce. On
GPUs the gradient allreduce and the broadcast of BatchNorm statistics run on the device through NCCL (nccl4py),
one GPU per process on each machine; no GPU has run that part yet (see README.md).

Every process must call each method of a group at the same point of the run, as with any collective.
"""
import os

import numpy as np

from lsnet_ref import backend
from lsnet_ref.tensor import FLOAT_DTYPES, Tensor

__all__ = ["DistributedError", "ONE_PROCESS", "OneProcess", "MPIGroup", "launched_world_size", "process_group"]

# What the launchers set in each process they start: MPICH's and Intel MPI's Hydra and Slurm's PMI (PMI_SIZE),
# Open MPI (OMPI_COMM_WORLD_SIZE), MVAPICH (MV2_COMM_WORLD_SIZE).
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
DIST_EXTRA = "pip install 'lsnet-ref[dist]' (mpi4py and the MPICH wheel, whose mpiexec goes first on PATH)"
GPU_EXTRA = "pip install 'lsnet-ref[dist-cuda]' (nccl4py with NCCL for CUDA 13)"


class DistributedError(RuntimeError):
    """A data-parallel run that cannot start: MPI missing or mismatched, too few GPUs."""


def launched_world_size(environ=os.environ):
    """(processes the MPI launcher started, the variable that says so); (1, None) when none did."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value), name
    return 1, None


class OneProcess:
    """The group of a run that is one process: every collective returns its own input."""

    rank, size, local_rank = 0, 1, 0

    def broadcast_state(self, model):
        pass

    def average_gradients(self, optimizer):
        pass

    def broadcast_buffers(self, model):
        pass

    def any(self, flag):
        return bool(flag)

    def sum(self, value):
        return value

    def gather(self, value):
        return [value]

    def sum_host(self, array):
        return array

    def abort(self, code):
        pass


ONE_PROCESS = OneProcess()


class MPIGroup:
    """The processes of MPI_COMM_WORLD; rank 0 is the one that writes and prints.

    `device_collectives`: a NcclCollectives for gradients and buffers on GPUs, None on CPUs.
    """

    def __init__(self, comm, mpi):
        self.comm, self.mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_rank = comm.Split_type(mpi.COMM_TYPE_SHARED).Get_rank()  # rank among this machine's processes
        self.device_collectives = None

    def broadcast_state(self, model):
        """Rank 0's parameters and buffers into every process's `model` (host arrays, before moving to a device)."""
        for tensor in model.state_tensors().values():
            self.comm.Bcast(tensor.data, root=0)

    def average_gradients(self, optimizer):
        """Each gradient becomes the mean of the processes' gradients: one allreduce of the optimizer's flat
        gradient buffer (built now on the first step), or one per parameter where the optimizer has none."""
        parameters = optimizer.parameters()
        for parameter in parameters:  # a process whose images were all unreadable contributes zeros
            if parameter.grad is None:
                kernels = backend.kernels_of(parameter.data)
                parameter.grad = Tensor(kernels.zeros(parameter.shape, parameter.dtype))
        flat = optimizer.flat_gradients()
        for array in [flat.grads.array] if flat is not None else [p.grad.data for p in parameters]:
            if self.device_collectives is not None and backend.device_of(array) == "cuda":
                self.device_collectives.average(array)
            else:
                self.comm.Allreduce(self.mpi.IN_PLACE, array, op=self.mpi.SUM)
                np.multiply(array, array.dtype.type(1.0 / self.size), out=array)

    def broadcast_buffers(self, model):
        """Rank 0's float buffers (BatchNorm running statistics) into every process's `model`, in one broadcast."""
        tensors = [tensor for _, tensor in model.named_buffers() if tensor.dtype in FLOAT_DTYPES]
        if not tensors:
            return
        kernels = backend.kernels_of(tensors[0].data)
        sizes = np.cumsum([0] + [int(np.prod(t.shape)) for t in tensors])
        packed = kernels.empty((int(sizes[-1]),), tensors[0].dtype)
        views = [packed[start:stop].reshape(t.shape) for t, start, stop in zip(tensors, sizes, sizes[1:])]
        for tensor, view in zip(tensors, views):
            kernels.copy_into(view, tensor.data)
        if self.device_collectives is not None and tensors[0].device == "cuda":
            self.device_collectives.broadcast(packed)
        else:
            self.comm.Bcast(packed, root=0)
        for tensor, view in zip(tensors, views):
            kernels.copy_into(tensor.data, view)

    def any(self, flag):
        """True in every process when `flag` is true in any."""
        return bool(self.comm.allreduce(bool(flag), op=self.mpi.LOR))

    def sum(self, value):
        """The sum over the processes of a number."""
        return self.comm.allreduce(value, op=self.mpi.SUM)

    def gather(self, value):
        """[rank 0's value, rank 1's, ...] in every process (any picklable value)."""
        return self.comm.allgather(value)

    def sum_host(self, array):
        """The elementwise sum over the processes of a host array, in place (synchronised BatchNorm)."""
        self.comm.Allreduce(self.mpi.IN_PLACE, array, op=self.mpi.SUM)
        return array

    def abort(self, code):
        """End every process of the run now (MPI_Abort): the others may be waiting in a collective."""
        self.comm.Abort(code)


class NcclCollectives:
    """The gradient allreduce and buffer broadcast on GPUs: NCCL on numba device arrays, on the default stream.

    Each process takes the GPU numbered by its rank on its machine; rank 0 makes NCCL's unique id and
    broadcasts it over MPI. Needs nccl4py (imported here only); not run by the tests (they have no GPU).
    """

    def __init__(self, comm, local_rank):
        try:
            import nccl.core as nccl
        except ImportError:
            raise DistributedError(f"--device cuda with several processes needs NCCL: {GPU_EXTRA}") from None
        from numba import cuda

        gpus = len(cuda.gpus)
        if local_rank >= gpus:
            raise DistributedError(f"process {local_rank} of its machine has no GPU of its own ({gpus} GPUs there); "
                                   "start at most one process per GPU on each machine")
        cuda.select_device(local_rank)
        unique_id = comm.bcast(bytes(nccl.get_unique_id()) if comm.Get_rank() == 0 else None, root=0)
        self.nccl = nccl
        self.comm = nccl.Communicator.init(comm.Get_size(), comm.Get_rank(), nccl.UniqueId.from_bytes(unique_id))

    def average(self, array):
        self.comm.allreduce(array, array, self.nccl.AVG, stream=0)

    def broadcast(self, array):
        self.comm.broadcast(array, array, root=0, stream=0)


def process_group(device):
    """The group of this process: ONE_PROCESS unless an MPI launcher started several processes.

    Call it before anything touches a GPU: on device cuda, it chooses this process's GPU.
    Raises DistributedError when mpi4py is missing, or sees another number of processes than the launcher
    started (an mpi4py built for another MPI than the mpiexec's).
    """
    size, variable = launched_world_size()
    if size == 1:
        return ONE_PROCESS
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"an MPI launcher started {size} processes ({variable}={size}) but mpi4py is not "
                               f"installed: {DIST_EXTRA}") from None
    if MPI.COMM_WORLD.Get_size() != size:
        raise DistributedError(f"the MPI launcher started {size} processes ({variable}={size}) but MPI sees "
                               f"{MPI.COMM_WORLD.Get_size()}: mpi4py was built for another MPI than the mpiexec that "
                               f"ran this; use the mpiexec of mpi4py's MPI ({DIST_EXTRA})")
    group = MPIGroup(MPI.COMM_WORLD, MPI)
    if device == "cuda":
        group.device_collectives = NcclCollectives(group.comm, group.local_rank)
    return group
