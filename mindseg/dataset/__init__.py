"""COCO-format data: JSON and MindRecord readers, transforms, the batched pipeline and a synthetic
shapes dataset. Import the submodules directly; this package imports nothing heavy."""
