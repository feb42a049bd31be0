"""Model set-up shared by the exactness tests and scripts/bench_torchvision.py."""
import torch


def randomise(model):
    """Non-trivial eval statistics, so a batch norm that mixes up its channels shows; and no
    parameter so small that what flows through it cannot show in the output (ViT's zero-initialised
    head, ConvNeXt's 1e-6 layer scales)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() < 1e-3:
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5 if p.dim() <= 1 else
                        torch.randn(p.shape, generator=g) * 0.05)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if getattr(m, "weight", None) is not None and isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                                                                       torch.nn.GroupNorm, torch.nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
