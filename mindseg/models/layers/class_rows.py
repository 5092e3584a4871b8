"""Which parameters of a model have one block of rows per class, so that fine-tuning can carry
the rows of the classes a checkpoint and a new dataset share (:mod:`mindseg.engine.finetune`).

A head marks its class-shaped predictor with :func:`mark_class_rows`: the predictor's weight and
bias have ``per_class`` rows (output channels, axis 0) for each of the K classes, class k at rows
``k * per_class .. (k + 1) * per_class - 1``, followed by ``extra`` rows that belong to no class
(the background logit of Mask R-CNN's box classifier).
"""


def mark_class_rows(cell, per_class=1, extra=0):
    """Mark ``cell`` (a Dense or Conv2d predictor) as holding ``per_class`` rows per class and
    ``extra`` trailing class-free rows; returns the cell."""
    cell.class_rows = (int(per_class), int(extra))
    return cell


def class_row_params(net):
    """``{parameter name: (per_class, extra)}`` of every marked predictor in ``net``."""
    layout = {}
    for _, cell in net.cells_and_names():
        rows = getattr(cell, "class_rows", None)
        if rows is None:
            continue
        for param in cell.get_parameters(expand=False):
            layout[param.name] = rows
    return layout
