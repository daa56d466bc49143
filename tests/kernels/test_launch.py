"""DirectLaunch: the JIT for a launch it has not seen, the compiled kernel for one it has."""
import pytest

torch = pytest.importorskip("torch")

from triton.compiler import CompiledKernel  # noqa: E402

from kernels.launch import DirectLaunch, specialization  # noqa: E402


class FakeCompiled(CompiledKernel):
    """Records direct launches (the real one needs a GPU)."""

    def __init__(self):
        self.calls = []
        self.module = None  # nothing loaded, nothing to unload


    def __getitem__(self, grid):
        return lambda *args: self.calls.append((grid, args))


class FakeJit:
    """Stands in for a triton.jit kernel of parameters (X, n, scale, BLOCK, MODE)."""

    arg_names = ["X", "n", "scale", "BLOCK", "MODE"]

    def __init__(self, compiles: bool):
        self.compiles = compiles
        self.calls = []
        self.compiled = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            if not self.compiles:
                return None  # the interpreter compiles nothing
            self.compiled.append(FakeCompiled())
            return self.compiled[-1]
        return run


def test_a_seen_specialisation_launches_the_compiled_kernel():
    jit = FakeJit(compiles=True)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {"num_warps": 4})
    x = torch.zeros(64)
    launch((2, 1, 1), x, 32, 0.5)
    assert jit.calls == [((2, 1, 1), (x, 32, 0.5), {"MODE": "a", "BLOCK": 64, "num_warps": 4})]
    launch((3, 1, 1), x, 48, 0.25)  # 48 specialises as 32 does; floats never do
    assert len(jit.calls) == 1
    assert jit.compiled[0].calls == [((3, 1, 1), (x, 48, 0.25, 64, "a"))]


@pytest.mark.parametrize("changed", [
    lambda x: (x[1:], 32, 0.5),  # no longer 16-byte aligned
    lambda x: (x.double(), 32, 0.5),  # another dtype
    lambda x: (x, 1, 0.5),  # an integer equal to 1 is a constant to the JIT
    lambda x: (x, 33, 0.5),  # no longer divisible by 16
    lambda x: (x, 2**40, 0.5),  # a 64-bit integer
])
def test_another_specialisation_goes_through_the_jit(changed):
    jit = FakeJit(compiles=True)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {})
    x = torch.zeros(64)
    launch((1, 1, 1), x, 32, 0.5)
    launch((1, 1, 1), *changed(x))
    assert len(jit.calls) == 2 and jit.compiled[0].calls == []
    launch((1, 1, 1), *changed(x))  # known from then on
    assert len(jit.calls) == 2 and len(jit.compiled[1].calls) == 1


def test_without_a_compiled_kernel_every_launch_goes_through_the_jit():
    jit = FakeJit(compiles=False)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {})
    for _ in range(3):
        launch((1, 1, 1), torch.zeros(4), 16, 1.0)
    assert len(jit.calls) == 3


def test_specialization_classes():
    x = torch.zeros(8)
    assert specialization((x,)) == specialization((torch.ones(8),))
    assert specialization((True,)) != specialization((1,))
    assert specialization((16,)) == specialization((4096,)) != specialization((8,))
    assert specialization((0.5,)) == specialization((2.0,))
