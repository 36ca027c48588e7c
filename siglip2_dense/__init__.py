"""siglip2-dense: SigLIP2 vision encoders as backbones for dense prediction."""

from siglip2_dense.backbone import Backbone, DenseFeatures, load_backbone, tokens_to_grid

__all__ = ["Backbone", "DenseFeatures", "load_backbone", "tokens_to_grid"]
__version__ = "0.1.0"
