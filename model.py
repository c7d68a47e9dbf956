"""
The MNIST classifier of the blog post "Latent Diffusion Series: MNIST Classifier"
(Nick Tasios), layer for layer, plus the 128-d feature vector that the blog histograms and
that fid.py uses to score generated digits.

    from model import Classifier, load_classifier, classifier_id
    model = Classifier()
    logits = model(x)             # x (B, 1, 32, 32) in [0, 1] -> (B, 10)
    f = model.features(x)         # (B, 128): last convolution before its ReLU, pooled
    model, ckpt = load_classifier('out/classifier.pt')   # a checkpoint written by train.py
    classifier_id('out/classifier.pt')                    # its name, e.g. 'a7a15236ad73'

A LeNet-like CNN: three 3x3 convolutions with ReLU, each followed by a pooling that
halves (max) or quarters (average) the resolution, then dropout and one linear layer.

Parameter count: the blog's text says 16,554 parameters, but the code it prints has
80 + 1,168 + 4,640 + 1,290 = 7,178, and no choice of widths or kernel sizes that keeps its
layer list and its 8x16x16 / 16x8x8 / 32x2x2 shapes gives 16,554. We follow the printed
code, so this model has 7,178 parameters.
"""

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mnist import reason


class Classifier(nn.Module):

    def __init__(self, dropout=0.5):
        super().__init__()
        # one Sequential, so that the blog's layer indices hold: the pooling outputs it
        # plots are layers[2], layers[5] and layers[8]; the last convolution is layers[6]
        self.layers = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding='same'),    # 0: (B, 8, 32, 32)   1*8*9 + 8 = 80 params
            nn.ReLU(),                             # 1
            nn.MaxPool2d(2),                       # 2: (B, 8, 16, 16)   level 0
            nn.Conv2d(8, 16, 3, padding='same'),   # 3: (B, 16, 16, 16)  8*16*9 + 16 = 1,168
            nn.ReLU(),                             # 4
            nn.MaxPool2d(2),                       # 5: (B, 16, 8, 8)    level 1
            nn.Conv2d(16, 32, 3, padding='same'),  # 6: (B, 32, 8, 8)    16*32*9 + 32 = 4,640
            nn.ReLU(),                             # 7
            nn.AvgPool2d(4),                       # 8: (B, 32, 2, 2)    level 2
            nn.Flatten(),                          # 9: (B, 128)
            nn.Dropout(dropout),                   # 10
            nn.Linear(128, 10),                    # 11: (B, 10)         128*10 + 10 = 1,290
        )

    def forward(self, x):
        # x: (B, 1, 32, 32) -> logits (B, 10); softmax lives in the cross-entropy loss
        return self.layers(x)

    def features(self, x, after_relu=False):
        """The blog's 128-d feature vector of a batch x (B, 1, 32, 32) -> (B, 128).

        By default the output of the last convolution *before* its ReLU, average-pooled 4x4
        and flattened: the blog takes it there because the ReLU would clip every negative
        value to zero and the Fréchet distance assumes roughly normal features. With
        after_relu=True it is the input of the final linear layer instead.
        """
        return self.features_and_logits(x, after_relu)[0]

    def features_and_logits(self, x, after_relu=False):
        """(features (B, 128), logits (B, 10)) of a batch x (B, 1, 32, 32), in one pass."""
        h = self.layers[:7](x)       # (B, 32, 8, 8): up to and including the last conv
        post = self.layers[7:10](h)  # (B, 128): ReLU, 4x4 average pool, flatten
        f = post if after_relu else F.avg_pool2d(h, 4).flatten(1)  # (B, 128) without the ReLU
        return f, self.layers[10:](post)  # dropout (off in eval mode) and the linear layer


def get_device(name='auto'):
    """'auto' picks cuda, then mps, then cpu. Any other name must be a device torch has here."""
    if name == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise ValueError(f'--device {name!r} is not a torch device (try auto, cpu, cuda, cuda:1, mps)') from None
    if kind not in ('cpu', 'cuda', 'mps'):  # meta holds no data; xpu, hpu, ... are not supported here
        raise ValueError(f'--device {name}: these scripts run on cpu, cuda or mps, not {kind}')
    if kind == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: this PyTorch ({torch.__version__}) sees no CUDA GPU')
    if kind == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f'--device {name}: MPS is not available on this machine')
    return name


def load_classifier(path, device='cpu'):
    """Load a checkpoint written by train.py; return (model in eval mode, checkpoint dict).

    The file is checked field by field before use: a dict, whose 'model' holds a tensor of
    the right shape for every weight of Classifier, all finite, and an integer 'epoch' if it
    has one; anything else gets one ValueError that names the file and the field."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: no such checkpoint; run python train.py first') from None
    except Exception as e:  # not a zip/pickle file, or holds objects weights_only refuses
        raise ValueError(f'{path}: not a checkpoint written by train.py (torch.load: {reason(e)})') from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt:
        raise ValueError(f'{path}: not a checkpoint written by train.py (no "model" entry)')
    weights = ckpt['model']
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise ValueError(f'{path}: "model" must be a dict of tensors (a state_dict), got {type(weights).__name__}')
    model = Classifier().to(device)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))
        raise ValueError(f'{path}: its weights do not fit model.Classifier '
                         f'(mismatched entries, name and shape: {diff[:6]})')
    bad = [k for k, v in weights.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f'{path}: the weights {bad} hold NaN or infinite values (a run that diverged?)')
    if 'epoch' in ckpt and (not isinstance(ckpt['epoch'], int) or ckpt['epoch'] < 0):
        raise ValueError(f'{path}: "epoch" must be a whole number >= 0, got {ckpt["epoch"]!r}')
    model.load_state_dict(weights)
    model.eval()
    return model, ckpt


def classifier_id(path):
    """The name of a trained classifier: the first 12 hex digits of its checkpoint file's
    SHA-256. fid.py reports every number with it (the yardstick), and train.py prints it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
