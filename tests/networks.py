"""
Networks for the tests, written out here rather than taken from model.py: the blog's layer
list, and the edits a reader makes first, each split as model.py splits it: the levels, up to
the first Flatten, then the head. Tests of the mechanism (levels, features,
checkpoints) run on these, so they keep passing after model.py is edited; only the two
pinning tests in tests/test_model.py check that model.py still builds the blog's network.
"""

import torch
import torch.nn as nn

import model as model_py


def conv(c_in, c_out, k=3):
    return nn.Conv2d(c_in, c_out, k, padding='same')

def blog():
    """The blog's layer list: pooling layers (the levels) at 2, 5, 8; 128 features."""
    return [conv(1, 8), nn.ReLU(), nn.MaxPool2d(2), conv(8, 16), nn.ReLU(), nn.MaxPool2d(2),
            conv(16, 32), nn.ReLU(), nn.AvgPool2d(4),
            nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)]

def layers(name):
    """A fresh layer list: the blog's ('blog') or one of EDITS."""
    relu = lambda: nn.ReLU(inplace=True)
    return {
        'blog': blog,
        'wider': lambda: [conv(1, 16), nn.ReLU(), nn.MaxPool2d(2), conv(16, 32), nn.ReLU(),
                          nn.MaxPool2d(2), conv(32, 64), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                          nn.Dropout(), nn.Linear(256, 10)],
        'batchnorm': lambda: [conv(1, 8), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              conv(8, 16), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                              conv(16, 32), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(4),
                              nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)],
        'no dropout': lambda: [m for m in blog() if not isinstance(m, nn.Dropout)],
        'extra conv': lambda: [*blog()[:8], conv(32, 32), nn.ReLU(), *blog()[8:]],
        'global average pool, GELU': lambda: [
            conv(1, 8), nn.GELU(), nn.MaxPool2d(2), conv(8, 16), nn.GELU(), nn.MaxPool2d(2),
            conv(16, 32), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(),
            nn.Linear(32, 10)],
        'in-place ReLU, 5x5 kernels, max pool': lambda: [
            conv(1, 8, 5), relu(), nn.MaxPool2d(2), conv(8, 16, 5), relu(), nn.MaxPool2d(2),
            conv(16, 32, 5), relu(), nn.MaxPool2d(4),
            nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)],
        'hidden linear layer': lambda: [*blog()[:10], nn.Linear(128, 64), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(64, 10)],
    }[name]()

EDITS = ['wider', 'batchnorm', 'no dropout', 'extra conv', 'global average pool, GELU',
         'in-place ReLU, 5x5 kernels, max pool', 'hidden linear layer']

def split(layer_list):
    """(levels, head) of a layer list: the head starts at the first Flatten."""
    i = next(i for i, m in enumerate(layer_list) if isinstance(m, nn.Flatten))
    return nn.Sequential(*layer_list[:i]), nn.Sequential(*layer_list[i:])

def network(name, seed=0):
    """A Classifier whose levels and head are split(layers(name)), weights drawn from seed."""
    torch.manual_seed(seed)
    model = model_py.Classifier()
    model.levels, model.head = split(layers(name))
    return model

def use_network(monkeypatch, name):
    """Make model.py build layers(name), as after a reader's edit; returns such a model."""
    class Edited(model_py.Classifier):
        def __init__(self):
            super().__init__()
            self.levels, self.head = split(layers(name))
    monkeypatch.setattr(model_py, 'Classifier', Edited)
    return Edited()

def save_model(path, model, epoch=0, val_acc=None, **info):
    """A checkpoint of model as train.py writes one, without the training state: enough for
    load_classifier, inspect_activations.py and fid.py."""
    torch.save({'model': model.state_dict(), 'network': repr(model), 'epoch': epoch,
                'val_acc': val_acc, **info}, path)

def walk_features(model, x):
    """(before, after) features of x, found by walking all the layers one by one, independently
    of model.py: before = the input of the last activation ahead of the first linear layer, put
    through the pooling layers between them; after = that linear layer's input."""
    walk = [*model.levels, *model.head]
    linear = next(i for i, m in enumerate(walk) if isinstance(m, nn.Linear))
    act = max(i for i, m in enumerate(walk[:linear]) if isinstance(m, (nn.ReLU, nn.GELU)))
    h = x
    for i, layer in enumerate(walk[:linear]):
        if i == act:
            before = h.clone()                        # an in-place ReLU would change h
            for m in walk[act + 1:linear]:
                if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                    before = m(before)
        h = layer(h)
    return before.flatten(1), h
