"""Swapping layers of a built network for wrappers, in place, parameter names unchanged."""
from mindspore import nn

__all__ = ["wrap_layers"]


def wrap_layers(cell, wrap, wrapper_type):
    """Replace each child below ``cell`` for which ``wrap(child)`` returns a cell by that cell
    (in place; ``wrap`` returns None to look inside the child instead); children already of
    ``wrapper_type`` are left. Returns how many were replaced. The wrappers are meant to be cells
    with ``auto_prefix=False``, so that the parameters keep their names."""
    count = 0
    changed = False
    for name, child in list(cell._cells.items()):  # pylint: disable=protected-access
        if child is None or isinstance(child, wrapper_type):
            continue
        wrapped = wrap(child)
        if wrapped is not None:
            cell._cells[name] = wrapped  # pylint: disable=protected-access
            count += 1
            changed = True
        else:
            count += wrap_layers(child, wrap, wrapper_type)
    if changed and isinstance(cell, nn.SequentialCell):
        cell.cell_list = list(cell.cells())
    return count
