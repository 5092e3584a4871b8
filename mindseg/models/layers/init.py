"""Weight initialisation shared by the backbones mindseg defines itself (VoVNet, DLA)."""
import mindspore.common.initializer as init
import mindspore.nn as nn


def he_init_convs(net, mode):
    """He-normal weights (``mode`` "fan_in" or "fan_out", ReLU gain) and zero biases for every
    ``nn.Conv2d`` of ``net``, in ``cells_and_names`` order."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            cell.weight.set_data(init.initializer(init.HeNormal(mode=mode, nonlinearity="relu"),
                                                  cell.weight.shape, cell.weight.dtype))
            if cell.bias is not None:
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))
