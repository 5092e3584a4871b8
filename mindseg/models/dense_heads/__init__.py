"""Dense heads: predictions at every feature-map location of every level, their targets, losses
and inference. The RPN proposes boxes for Mask R-CNN's RoI heads; FCOS detects boxes for
CenterMask's mask heads."""
