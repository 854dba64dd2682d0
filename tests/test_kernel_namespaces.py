"""kernels.cpu and kernels.cuda offer the same kernels with the same signatures."""
import inspect

import kernels.cpu
import kernels.cuda
import kernels.reference


def public(module):
    return {name: inspect.signature(getattr(module, name)) for name in dir(module)
            if not name.startswith("_") and callable(getattr(module, name))
            and not inspect.ismodule(getattr(module, name))}


def test_cpu_and_cuda_export_the_same_kernels_with_the_same_signatures():
    cpu, gpu = public(kernels.cpu), public(kernels.cuda)
    assert sorted(cpu) == sorted(gpu), (
        f"only on cpu: {sorted(set(cpu) - set(gpu))}; only on cuda: {sorted(set(gpu) - set(cpu))}")
    differing = {name: (str(cpu[name]), str(gpu[name])) for name in cpu if cpu[name] != gpu[name]}
    assert not differing, differing


def test_references_match_the_kernel_signatures():
    cpu, reference = public(kernels.cpu), public(kernels.reference)
    assert set(reference) <= set(cpu), sorted(set(reference) - set(cpu))
    differing = {name: (str(cpu[name]), str(reference[name])) for name in reference if cpu[name] != reference[name]}
    assert not differing, differing
