"""Import of PyTorch checkpoints (torchvision, detectron2, centermask2) into mindseg models.

``core`` reads files and maps keys; one module per source holds its key rules. The entry point is
``mindseg.utils.convert_weights``.
"""
