"""
The MNIST classifier of the blog post "Latent Diffusion Series: MNIST Classifier"
(Nick Tasios), layer for layer, plus its feature vector (128 numbers): the blog histograms
it before the last ReLU, fid.py scores generated digits with it after (fid.py says why).

    from model import Classifier, load_classifier, classifier_id
    model = Classifier()
    logits = model(x)             # x (B, 1, 32, 32) in [0, 1] -> (B, 10)
    f = model.features(x, after_relu=False)   # (B, 128): the last convolution's output, pooled
    model.summary()               # 'levels 8x16x16, 16x8x8, 32x2x2 | 128 features | 7,178 parameters'
    model, ckpt = load_classifier('out/classifier.pt')   # a checkpoint written by train.py
    classifier_id('out/classifier.pt')                    # its name, e.g. 'a7a15236ad73'

A LeNet-like CNN: three 3x3 convolutions with ReLU, each followed by a pooling that
halves (max) or quarters (average) the resolution, then dropout and one linear layer.

Parameter count: the blog's text says 16,554, but the code it prints, which we follow, has
80 + 1,168 + 4,640 + 1,290 = 7,178 (no widths or kernel sizes that keep its shapes give 16,554).
"""

import difflib
import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from mnist import reason


# Edit the network freely (the README's "Things to try" has edits and what they did); the scripts rely on:
# - the network is the one nn.Sequential self.layers: images (B, 1, 32, 32) in, logits (B, 10)
#   out; forward() is just self.layers(x) (summary() refuses one that does more);
# - its pooling layers (POOLING) end, in order, the levels inspect_activations.py draws (layers[2], [5], [8]);
# - fid.py's feature vector is read from the last nn.Conv2d to the first nn.Linear after it (features());
# - a checkpoint of another network (architecture()) is refused: `python train.py` trains the new one.
# Make the first nn.Linear's in_features (the feature size, 128) match what reaches it (channels x H x W).
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.LPPool2d)


class Classifier(nn.Module):

    def __init__(self, dropout=0.5):
        super().__init__()
        c1, c2, c3 = 8, 16, 32  # the channels of the three levels; one Sequential: all as in the blog
        self.layers = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding='same'),    # 0: (B, 8, 32, 32)   1*8*9 + 8 = 80 params
            nn.ReLU(),                              # 1
            nn.MaxPool2d(2),                        # 2: (B, 8, 16, 16)   level 0
            nn.Conv2d(c1, c2, 3, padding='same'),   # 3: (B, 16, 16, 16)  8*16*9 + 16 = 1,168
            nn.ReLU(),                              # 4
            nn.MaxPool2d(2),                        # 5: (B, 16, 8, 8)    level 1
            nn.Conv2d(c2, c3, 3, padding='same'),   # 6: (B, 32, 8, 8)    16*32*9 + 32 = 4,640
            nn.ReLU(),                              # 7
            nn.AvgPool2d(4),                        # 8: (B, 32, 2, 2)    level 2
            nn.Flatten(),                           # 9: (B, 128)
            nn.Dropout(dropout),                    # 10
            nn.Linear(c3 * 2 * 2, 10),              # 11: (B, 10)         128*10 + 10 = 1,290
        )

    def forward(self, x):
        # x: (B, 1, 32, 32) -> logits (B, 10); softmax lives in the cross-entropy loss
        return self.layers(x)

    def features(self, x, after_relu):
        """The feature vector (B, D = feature_size() = 128) of a batch x (B, 1, 32, 32): the last
        convolution's output through the layers up to the first linear layer (the blog's ReLU,
        4x4 average pool, flatten). after_relu=False skips the activations: "pre", the blog's
        histograms; True keeps them: "post", the linear layer's input and fid.py's yardstick
        (the choice is yours at every call; fid.py's docstring says why it uses post)."""
        return self.features_and_logits(x, after_relu)[0]

    def features_and_logits(self, x, after_relu):
        """(features (B, D), logits (B, 10)) of a batch x (B, 1, 32, 32), in one pass."""
        # the post's own code, written for any network; for the blog's it is
        #   h = self.layers[:7](x); pre = F.avg_pool2d(h, 4).flatten(1); post = self.layers[7:10](h)
        conv, head = self.feature_layers()
        h = self.layers[:conv + 1](x)          # (B, 32, 8, 8): up to and including the last conv
        # "post" goes through every layer up to the linear one, "pre" skips the activations and
        # dropout (off in eval mode); one tensor until an activation makes them two
        post = pre = h
        for layer in self.layers[conv + 1:head]:
            if is_activation(layer) or isinstance(layer, nn.Dropout):
                inplace = post is pre and getattr(layer, 'inplace', False)   # must not change pre as well
                post = layer(post.clone() if inplace else post)
            elif post is pre:
                post = pre = layer(post)
            else:
                post, pre = layer(post), layer(pre)
        return (post if after_relu else pre).flatten(1), self.layers[head:](post)   # (B, 128), (B, 10)

    # -------------------------------------------------------------------------
    # the network's parts, found in self.layers (see the comment above the class)

    def levels(self):
        """Indices in self.layers of the pooling layers, whose outputs the blog plots: [2, 5, 8]."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, POOLING)]

    def feature_layers(self):
        """(conv, head): the indices of the last convolution and of the first linear layer after it (6, 11)."""
        convs = [i for i, layer in enumerate(self.layers) if isinstance(layer, nn.Conv2d)]
        if not convs:
            raise ValueError('model.py: the network has no nn.Conv2d; the features are read at the last one')
        head = next((i for i in range(convs[-1] + 1, len(self.layers)) if isinstance(self.layers[i], nn.Linear)), None)
        if head is None:
            raise ValueError('model.py: no nn.Linear after the last nn.Conv2d; its input is the feature vector')
        return convs[-1], head

    def feature_size(self):
        """D, the length of the feature vector: the in_features of the linear layer (128)."""
        return self.layers[self.feature_layers()[1]].in_features

    def architecture(self):
        """The network as checkpoints record it: one string per layer ('layers.0: Conv2d(1, 8, ...)')."""
        return [f'{name}: {m!r}' for name, m in self.named_modules() if next(m.children(), None) is None]

    @torch.no_grad()
    def summary(self):
        """One line: each level's shape, the feature size and the parameter count, from images
        sent through the layers in eval mode. A network the other scripts can't read gets one
        ValueError saying why: layers that do not fit together, a forward() that does more than
        self.layers, a layer of its own making between the last convolution and the linear layer."""
        was_training = self.training
        self.eval()
        x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)).to(next(self.parameters()).device)
        h, levels, shapes = x, self.levels(), []
        try:
            for i, layer in enumerate(self.layers):
                h = layer(h)
                if i in levels:
                    shapes.append('x'.join(map(str, h.shape[1:])))
            if tuple(h.shape) != (2, 10):
                raise ValueError(f'model.py: the network gives {tuple(h.shape[1:])} per image, expected 10 logits')
            if not torch.allclose(self(x), h):
                raise ValueError('model.py: forward() computes more than self.layers(x), and the other scripts '
                                 'read the network from self.layers: put the change into self.layers as a layer')
        except RuntimeError as e:
            fix = (f' (in_features should be {h.shape[1]})' if isinstance(layer, nn.Linear) and h.ndim == 2 else '')
            raise ValueError(f'model.py: layers[{i}] = {layer} does not take the output of the layers '
                             f'before it, of shape {tuple(h.shape)}{fix}: {reason(e)}') from None
        finally:
            self.train(was_training)
        conv, head = self.feature_layers()
        for i in range(conv + 1, head):
            if not self.layers[i].__module__.startswith('torch.nn') and not is_activation(self.layers[i]):
                raise ValueError(f'model.py: layers[{i}] = {self.layers[i]} is not a torch.nn layer, so the '
                                 f'features cannot tell whether it is an activation; use one of torch.nn, or '
                                 f'give its class is_activation = True')
        return (f'levels {", ".join(shapes) or "none"} | {self.feature_size():,} features | '
                f'{sum(p.numel() for p in self.parameters()):,} parameters')

def is_activation(layer):
    """True for torch.nn's activations (nn.ReLU, nn.GELU, nn.Tanh, ...) and classes that say is_activation = True."""
    return type(layer).__module__ == nn.ReLU.__module__ or getattr(layer, 'is_activation', False) is True

# -----------------------------------------------------------------------------
# checkpoints: loading one, checking it was trained with this network, naming it

def load_classifier(path, device='cpu'):
    """Load a checkpoint written by train.py; return (model in eval mode, checkpoint dict). Each
    field is checked first (the network Classifier builds now, a finite tensor of the right shape
    per weight, an integer 'epoch' if any): anything else gets one ValueError naming file and field."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: no such checkpoint; run python train.py first') from None
    except Exception as e:  # not a zip/pickle file, or holds objects weights_only refuses
        raise ValueError(f'{path}: not a checkpoint written by train.py (torch.load: {reason(e)})') from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'architecture' not in ckpt:
        raise ValueError(f'{path}: not a checkpoint written by train.py (it needs "model" and "architecture" entries)')
    weights = ckpt['model']
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise ValueError(f'{path}: "model" must be a dict of tensors (a state_dict), got {type(weights).__name__}')
    model = Classifier().to(device).eval()
    model.summary()  # a network model.py can't build right is its own error, before any checkpoint's
    # weights can fit another network (another activation, say): its numbers would be a never-trained network's
    if ckpt['architecture'] != model.architecture():
        raise ValueError(f'{path} was trained with another network than model.py builds now '
                         f'({network_diff(ckpt["architecture"], model.architecture())}); '
                         f'python train.py trains the current one')
    shapes = lambda state: {(k, tuple(v.shape)) for k, v in state.items()}
    diff = sorted(shapes(weights) ^ shapes(model.state_dict()))   # (name, shape) in one but not the other
    if diff:
        raise ValueError(f'{path}: its weights do not fit model.Classifier '
                         f'(mismatched entries, name and shape: {diff[:6]})')
    bad = [k for k, v in weights.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f'{path}: the weights {bad} hold NaN or infinite values (a run that diverged?)')
    if 'epoch' in ckpt and (not isinstance(ckpt['epoch'], int) or ckpt['epoch'] < 0):
        raise ValueError(f'{path}: "epoch" must be a whole number >= 0, got {ckpt["epoch"]!r}')
    model.load_state_dict(weights)
    return model, ckpt

def network_diff(old, new, most=3):
    """Where a recorded architecture() differs from the current one, in a few words:
    "layers.1 was ReLU(), is GELU(approximate='none'); layers.11 BatchNorm2d(...) is new"."""
    if not isinstance(old, list) or not all(isinstance(s, str) for s in old):
        return f'its record of the network is a {type(old).__name__}, not a list of layers'
    name = lambda s: s.split(': ', 1)[0]                        # 'layers.1: ReLU()' -> 'layers.1'
    a, b = [[s.split(': ', 1)[-1] for s in arch] for arch in (old, new)]   # ['ReLU()', ...]
    # as many layers: compare them place by place; else let difflib find what was added or removed
    ops = ([('replace', i, i + 1, i, i + 1) for i in range(len(b)) if a[i] != b[i]] if len(a) == len(b)
           else difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes())
    say = {'replace': '{at} was {was}, is {now}', 'insert': '{at} {now} is new', 'delete': '{at} {was} is gone'}
    changes = [say[op].format(at=name(old[i1] if op == 'delete' else new[j1]), was=', '.join(a[i1:i2]),
                              now=', '.join(b[j1:j2])) for op, i1, i2, j1, j2 in ops if op != 'equal']
    return '; '.join(changes[:most]) + (f'; and {len(changes) - most} more' if len(changes) > most else '')

def classifier_id(path):
    """A trained classifier's name, the yardstick fid.py reports with: its file's SHA-256, first 12 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file

def get_device(name='auto'):
    """'auto' picks cuda, then mps, then cpu. Any other name must be a device torch has here."""
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise ValueError(f'--device {name!r} is not a torch device (try auto, cpu, cuda, cuda:1, mps)') from None
    if kind not in ('cpu', 'cuda', 'mps'):  # meta holds no data; xpu, hpu, ... are not supported here
        raise ValueError(f'--device {name}: these scripts run on cpu, cuda or mps, not {kind}')
    if kind != 'cpu' and not (torch.cuda if kind == 'cuda' else torch.backends.mps).is_available():
        raise ValueError(f'--device {name}: this PyTorch ({torch.__version__}) sees no {kind.upper()} GPU')
    return name
