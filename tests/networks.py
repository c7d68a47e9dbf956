"""
Networks for the tests, written out here rather than taken from model.py: the blog's layer
list, and the edits a reader makes first. Tests of the mechanism (levels, features,
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

def network(name, seed=0):
    """A Classifier whose self.layers is layers(name), with weights drawn from seed."""
    torch.manual_seed(seed)
    model = model_py.Classifier()
    model.layers = nn.Sequential(*layers(name))
    return model

def use_network(monkeypatch, name):
    """Make model.py build layers(name), as after a reader's edit; returns such a model."""
    class Edited(model_py.Classifier):
        def __init__(self, dropout=0.5):
            super().__init__(dropout)
            self.layers = nn.Sequential(*layers(name))
    monkeypatch.setattr(model_py, 'Classifier', Edited)
    return Edited()

def save_model(path, model, epoch=0, val_acc=None, **info):
    """A checkpoint of model as train.py writes one, without the training state: enough for
    load_classifier, inspect_activations.py and fid.py."""
    torch.save({'model': model.state_dict(), 'network': repr(model), 'epoch': epoch,
                'val_acc': val_acc, **info}, path)

def walk_features(model, x):
    """(pre, post) features of x, found by walking model.layers, independently of model.py:
    pre = the last conv's output put through the pooling layers before the first linear layer
    after it, post = that linear layer's input."""
    layers = list(model.layers)
    conv = max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d))
    linear = next(i for i in range(conv, len(layers)) if isinstance(layers[i], nn.Linear))
    h = x
    for i, layer in enumerate(layers[:linear]):
        h = layer(h)
        if i == conv:
            pre = h.clone()
            for m in layers[conv:linear]:
                if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                    pre = m(pre)
    return pre.flatten(1), h
