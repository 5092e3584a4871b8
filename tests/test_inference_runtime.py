"""engine.runners.compile_network: GRAPH networks compiled before their first run, with the
heap the compiler freed handed back; the outputs are those of an uncompiled call."""
import platform

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from mindseg.engine.runners import compile_network, release_freed_heap


def test_compile_network_compiles_in_graph_mode_only_and_keeps_the_outputs(mode):
    net = nn.Dense(3, 2)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = x @ net.weight.asnumpy().T + net.bias.asnumpy()
    assert compile_network(net, Tensor(x)) == (mode == ms.GRAPH_MODE)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), want, rtol=1e-6)


def test_release_freed_heap_runs_where_glibc_is():
    assert release_freed_heap() == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
