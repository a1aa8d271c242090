"""hitgan: HiT-GAN (Zhao et al., NeurIPS 2021) in PyTorch."""

from hitgan.models.config import PRESETS, DiscriminatorConfig, GeneratorConfig, get_preset
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import from_pretrained, save_pretrained

__all__ = [
    "PRESETS",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "HiTGenerator",
    "StyleGANDiscriminator",
    "from_pretrained",
    "get_preset",
    "save_pretrained",
]
__version__ = "0.1.0"
