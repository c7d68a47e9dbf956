"""
The classifier of the blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios),
layer for layer as its "Model" section builds it, and its features, as its "Evaluation"
section takes them.

    model = Classifier()
    logits = model(x)                    # x (B, 1, 32, 32) in [0, 1] -> (B, 10)
    before, after = model.features(x)    # (B, 128) each: before and after the last ReLU
    model, ckpt = load_classifier()      # trained: out/classifier.pt, or the shared classifier

It has 80 + 1,168 + 4,640 + 1,290 = 7,178 parameters, as the code the blog prints; the post's
text says 16,554, which its code does not give. We follow the code.
"""

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

# -----------------------------------------------------------------------------
# the blog's network

# the layers that end a level (a resolution): the blog's layers 2, 5 and 8 are such layers
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)

class Classifier(nn.Module):

    def __init__(self):
        super().__init__()
        c1, c2, c3 = 8, 16, 32  # the channels of the three levels
        # the blog's self.layers, in two parts. The levels: three times a convolution, a ReLU and
        # a pooling layer, one per resolution. The head reads the last level's output. Edit them
        # freely, but end the last level with its activation, then its pooling (the features are
        # read between the two), and keep the Linear's 128 equal to channels x H x W
        self.levels = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding='same'),    # 0: (B, 8, 32, 32)   1*8*9 + 8 = 80 params
            nn.ReLU(),                              # 1
            nn.MaxPool2d(2),                        # 2: (B, 8, 16, 16)   level 0 (halves H, W)
            nn.Conv2d(c1, c2, 3, padding='same'),   # 3: (B, 16, 16, 16)  8*16*9 + 16 = 1,168
            nn.ReLU(),                              # 4
            nn.MaxPool2d(2),                        # 5: (B, 16, 8, 8)    level 1
            nn.Conv2d(c2, c3, 3, padding='same'),   # 6: (B, 32, 8, 8)    16*32*9 + 32 = 4,640
            nn.ReLU(),                              # 7
            nn.AvgPool2d(4),                        # 8: (B, 32, 2, 2)    level 2
        )
        self.head = nn.Sequential(
            nn.Flatten(),                           # (B, 128)
            nn.Dropout(),                           # p = 0.5, off in eval mode
            nn.Linear(c3 * 2 * 2, 10),              # (B, 10)             128*10 + 10 = 1,290
        )

    def forward(self, x):
        # x: (B, 1, 32, 32) -> logits (B, 10); the softmax lives in the cross-entropy loss
        return self.head(self.levels(x))

    def features(self, x):
        """The features of images x (B, 1, 32, 32) before and after the last ReLU, (B, 128) each.
        The blog plots those before it; the head reads those after it, and fid.py scores them."""
        # the blog's line is avg_pool2d(model.layers[:7](x), 4), flattened: every layer up to the
        # last convolution (all but the last level's ReLU and pooling), then that level's pooling
        h = self.levels[:-2](x)                       # (B, 32, 8, 8): the blog's layers[:7]
        relu, pool = self.levels[-2:]                 # ReLU, AvgPool2d(4)
        before = pool(h).flatten(1)                   # (B, 128)
        after = pool(relu(h)).flatten(1)              # (B, 128): self.levels(x), flattened
        return before, after

# -----------------------------------------------------------------------------
# beyond the blog: a network's line of shapes and counts, and the name of a trained classifier
# (the yardstick fid.py reports its numbers with)

@torch.no_grad()
def summary(model):
    """One line: each level's output shape (C x H x W), the feature size, the parameters."""
    was_training = model.training
    model.eval()  # else an edit's batch norm would learn from the zeros
    h = torch.zeros(1, 1, 32, 32, device=next(model.parameters()).device)
    shapes = []
    for layer in model.levels:
        h = layer(h)
        if isinstance(layer, POOLING):
            shapes.append('x'.join(map(str, h.shape[1:])))
    model.train(was_training)
    n = sum(p.numel() for p in model.parameters())
    return f'levels {", ".join(shapes) or "none"} | {h[0].numel():,} features | {n:,} parameters'

def classifier_id(model):
    """A trained classifier's name, which fid.py prints: 12 hex digits of its weights' SHA-256."""
    sha = hashlib.sha256()
    for w in model.state_dict().values():
        sha.update(w.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:12]

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file. Checkpoints, and the classifier this
# repository ships: the series' shared yardstick

SHARED_ID = 'cbcf0d57247c'  # made by `python train.py`: the README says on what
SHARED_CHECKPOINT = Path(__file__).parent / f'classifier_{SHARED_ID}.pt'
TRAINED_CHECKPOINT = Path('out/classifier.pt')  # what train.py writes by default

def default_checkpoint():
    """out/classifier.pt if you trained one, else the shared classifier: the scripts' default."""
    return TRAINED_CHECKPOINT if TRAINED_CHECKPOINT.is_file() else SHARED_CHECKPOINT

def load_classifier(path=None, device='cpu'):
    """(the classifier in eval mode and channels-last, as train.py trains, and the checkpoint dict)
    of train.py's checkpoint at path (None: default_checkpoint()). The dict: 'model', 'network',
    'config', 'history', 'epoch', 'val_loss', 'val_acc' (None if not validated), 'path', ...
    A checkpoint of another network than model.py builds now is refused, even if its weights fit."""
    path = default_checkpoint() if path is None else path
    if not Path(path).is_file():
        raise FileNotFoundError(f'{path}: no such checkpoint; python train.py writes one')
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = Classifier().to(device, memory_format=torch.channels_last)
    old, new = ckpt.get('network', '').splitlines(), repr(model).splitlines()
    if old != new:  # the layers, one line each, as print(model) shows them
        diff = next((f'{a.strip()} is now {b.strip()}' for a, b in zip(old, new) if a != b),
                    f'{len(old)} lines of layers, now {len(new)}' if old else 'it records none')
        raise ValueError(f'{path} was trained with another network than model.py builds now '
                         f'({diff}); python train.py trains the current one')
    model.load_state_dict(ckpt['model'])
    return model.eval(), {**ckpt, 'path': str(path)}

def get_device(name='auto'):
    """'auto' picks cuda, then mps, then cpu; another name must be one of those, available here."""
    usable = [d for d, ok in (('cuda', torch.cuda.is_available()),
                              ('mps', torch.backends.mps.is_available()), ('cpu', True)) if ok]
    if name != 'auto' and name.split(':')[0] not in usable:
        raise ValueError(f'--device {name}: this PyTorch ({torch.__version__}) can use {usable}')
    return usable[0] if name == 'auto' else name
