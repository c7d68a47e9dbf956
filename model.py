"""
The classifier of the blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios),
layer for layer as its "Model" section builds it, and its feature vector: the last
convolution's output, which the blog histograms before the ReLU and fid.py scores after it.

    model = Classifier()
    logits = model(x)                           # x (B, 1, 32, 32) in [0, 1] -> (B, 10)
    f, logits = model.features(x, after_relu=False)   # (B, 128) features, (B, 10), one pass
    model, ckpt = load_classifier('out/classifier.pt')  # written by train.py; in eval mode

It has 80 + 1,168 + 4,640 + 1,290 = 7,178 parameters: the code the blog prints, which we
follow (its text says 16,554, which no choice of kernel sizes gives with its layer shapes).
"""

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

# the layers that end a level (a resolution) of the network, as the blog's MaxPool2d and AvgPool2d
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)

# -----------------------------------------------------------------------------
# the blog's network

# Edit it freely (the README's "Things to try" says how the other scripts find its parts); the
# first nn.Linear's in_features (128) must be what reaches it: channels x H x W.
class Classifier(nn.Module):

    def __init__(self, dropout=0.5):
        super().__init__()
        c1, c2, c3 = 8, 16, 32  # the channels of the three levels
        self.layers = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding='same'),    # 0: (B, 8, 32, 32)   1*8*9 + 8 = 80 params
            nn.ReLU(),                              # 1
            nn.MaxPool2d(2),                        # 2: (B, 8, 16, 16)   level 0 (halves H, W)
            nn.Conv2d(c1, c2, 3, padding='same'),   # 3: (B, 16, 16, 16)  8*16*9 + 16 = 1,168
            nn.ReLU(),                              # 4
            nn.MaxPool2d(2),                        # 5: (B, 16, 8, 8)    level 1
            nn.Conv2d(c2, c3, 3, padding='same'),   # 6: (B, 32, 8, 8)    16*32*9 + 32 = 4,640
            nn.ReLU(),                              # 7
            nn.AvgPool2d(4),                        # 8: (B, 32, 2, 2)    level 2
            nn.Flatten(),                           # 9: (B, 128)
            nn.Dropout(dropout),                    # 10 (off in eval mode)
            nn.Linear(c3 * 2 * 2, 10),              # 11: (B, 10)         128*10 + 10 = 1,290
        )

    def forward(self, x):
        # x: (B, 1, 32, 32) -> logits (B, 10); the softmax lives in the cross-entropy loss
        return self.layers(x)

    def features(self, x, after_relu):
        """(features (B, D), logits (B, 10)) of images x (B, 1, 32, 32), from one forward pass:
        the last convolution's output before its ReLU, pooled as the network pools it (the
        blog's histograms: (B, 32 * 2 * 2)); or with after_relu, the linear layer's input."""
        # the blog's own line for the first: avg_pool2d(model.layers[:7](x), 4).flatten(1). Here
        # the layers are found by type (in the blog's network: layers[6], [8] and [11]), and a
        # forward hook, a function PyTorch calls as the layer runs, takes its output or input
        modules = list(self.modules())   # every layer, nested ones too
        i = max(k for k, m in enumerate(modules) if isinstance(m, nn.Conv2d))   # the last conv
        j = next(k for k in range(i, len(modules)) if isinstance(modules[k], nn.Linear))
        taken = []
        if after_relu:
            with modules[j].register_forward_pre_hook(lambda m, args: taken.append(args[0])):
                logits = self(x)
            return taken[0], logits                         # (B, 128), (B, 10)
        # a copy of the conv's output, before an nn.ReLU(inplace=True) could change it
        with modules[i].register_forward_hook(lambda m, args, out: taken.append(out.clone())):
            logits = self(x)
        h = taken[0]                                        # (B, 32, 8, 8)
        for pool in [m for m in modules[i:j] if isinstance(m, POOLING)]:   # those between
            h = pool(h)                                     # (B, 32, 2, 2)
        return h.flatten(1), logits                         # (B, 128), (B, 10)

# -----------------------------------------------------------------------------
# beyond the blog: a network's line of shapes and counts, and the name of a trained classifier
# (the yardstick fid.py reports its numbers with)

@torch.no_grad()
def summary(model):
    """One line: each level's output shape (C x H x W), the feature size, the parameters."""
    was_training = model.training
    model.eval()  # else dropout would draw random numbers (and an edit's batch norm learn)
    x = torch.zeros(2, 1, 32, 32, device=next(model.parameters()).device)
    levels = [m for m in model.modules() if isinstance(m, POOLING)]
    shapes = []
    hooks = [m.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape[1:])))
             for m in levels]
    f, _ = model.features(x, after_relu=True)
    for hook in hooks:
        hook.remove()
    model.train(was_training)
    n = sum(p.numel() for p in model.parameters())
    return (f'levels {", ".join("x".join(map(str, s)) for s in shapes) or "none"} | '
            f'{f.shape[1]:,} features | {n:,} parameters')

def classifier_id(model):
    """The name of a trained classifier, which fid.py prints with its numbers: the first 12 hex
    digits of the SHA-256 of its weights (the same weights, the same name)."""
    sha = hashlib.sha256()
    for w in model.state_dict().values():
        sha.update(w.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:12]

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file

def load_classifier(path, device='cpu'):
    """(the classifier in eval mode, the checkpoint dict) of a checkpoint written by train.py;
    one of another network than model.py builds now is refused, also when its weights fit."""
    if not Path(path).is_file():
        raise FileNotFoundError(f'{path}: no such checkpoint; python train.py writes one')
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = Classifier().to(device)
    old, new = ckpt.get('network', '').splitlines(), repr(model).splitlines()
    if old != new:  # the layers, one line each, as print(model) shows them
        diff = next((f'{a.strip()} is now {b.strip()}' for a, b in zip(old, new) if a != b),
                    f'{len(old)} lines of layers, now {len(new)}' if old else 'it records none')
        raise ValueError(f'{path} was trained with another network than model.py builds now '
                         f'({diff}); python train.py trains the current one')
    model.load_state_dict(ckpt['model'])
    return model.eval(), ckpt

def get_device(name='auto'):
    """'auto' picks cuda, then mps, then cpu; another name must be one of those, available here."""
    usable = [d for d, ok in (('cuda', torch.cuda.is_available()),
                              ('mps', torch.backends.mps.is_available()), ('cpu', True)) if ok]
    if name != 'auto' and name.split(':')[0] not in usable:
        raise ValueError(f'--device {name}: this PyTorch ({torch.__version__}) can use {usable}')
    return usable[0] if name == 'auto' else name
