"""CenterMask with point representation (Wang et al., CVPR 2020): targets, losses, mask assembly,
heads and inference of the one-stage, box-free model in ``meta_arch/centermask_point.py``."""
