"""
Tests for model.py. Two kinds:
- the blog's network: model.py builds the blog's layer list, with its 7,178 parameters.
  These two tests fail after an edit of model.py, by design, and say so;
- the mechanism the other scripts use, on the blog's network and on edits of it written
  out in tests/networks.py: the pooling levels, the feature vector against independent
  computations, the one-line summary, and checkpoints refused when their network differs.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Classifier, get_device, is_activation, load_classifier
from networks import EDITS, network, other_network, save_model

ALL = ['blog', *EDITS]

# -----------------------------------------------------------------------------
# the blog's network (these fail after an edit of model.py: expected)

AFTER_AN_EDIT = ('This is expected after an edit of model.py: this test pins the blog\'s network, '
                 'every other test checks the network that model.py builds.')

def test_model_py_builds_the_blogs_layer_list():
    blog, now = network('blog')[0].architecture(), Classifier().architecture()
    from model import network_diff
    assert now == blog, f'model.py no longer builds the blog\'s network ({network_diff(blog, now)}). {AFTER_AN_EDIT}'

def test_model_py_has_the_blogs_parameter_count():
    # a 3x3 convolution from c_in to c_out channels has c_in*c_out*9 weights and c_out biases
    convs = [(1, 8), (8, 16), (16, 32)]
    expected = sum(c_in * c_out * 3 * 3 + c_out for c_in, c_out in convs) + 128 * 10 + 10
    assert expected == 80 + 1168 + 4640 + 1290 == 7178
    got = sum(p.numel() for p in Classifier().parameters())
    assert got == expected, f'the blog\'s network has 7,178 parameters, this model.py\'s has {got:,}. {AFTER_AN_EDIT}'

# -----------------------------------------------------------------------------
# the parts of a network, found in it

@pytest.mark.parametrize('name', ALL)
def test_levels_are_the_pooling_layers(name):
    model, levels, conv, D = network(name)
    assert model.levels() == levels
    assert model.feature_layers()[0] == conv and model.feature_size() == D
    # each level's output is what its pooling layer gives, a smaller map than its input
    model.eval()
    h = torch.rand(2, 1, 32, 32)
    for i, layer in enumerate(model.layers):
        before, h = h, layer(h)
        if i in levels:
            assert h.shape[-1] < before.shape[-1] and h.shape[1] == before.shape[1], (i, layer)

def test_summary_of_the_blogs_network():
    assert network('blog')[0].summary() == 'levels 8x16x16, 16x8x8, 32x2x2 | 128 features | 7,178 parameters'

@pytest.mark.parametrize('name', ALL)
def test_summary_shows_the_network(name):
    model, levels, _, D = network(name)
    model.train()
    h, shapes = torch.rand(1, 1, 32, 32), []
    with torch.no_grad():
        for i, layer in enumerate(model.eval().layers):
            h = layer(h)
            if i in levels:
                shapes.append('x'.join(map(str, h.shape[1:])))
    model.train()
    line = model.summary()
    assert line == (f'levels {", ".join(shapes)} | {D:,} features | '
                    f'{sum(p.numel() for p in model.parameters()):,} parameters')
    assert model.training                                             # its mode is put back

def test_summary_of_a_network_whose_layers_do_not_fit():
    model, *_ = network('wider')
    model.layers[-1] = nn.Linear(128, 10)                             # 16/32/64 channels need Linear(256, 10)
    with pytest.raises(ValueError, match=r'layers\[11\] = Linear\(in_features=128.*of shape \(2, 256\) \(in_features should be 256\)') as e:
        model.summary()
    assert '\n' not in str(e.value)
    model.layers.append(nn.Linear(10, 3))                             # 3 outputs: not 10 digits
    model.layers[-2] = nn.Linear(256, 10)
    with pytest.raises(ValueError, match=r'gives \(3,\) per image, expected 10 logits'):
        model.summary()

def test_summary_refuses_what_the_scripts_cannot_read():
    # a forward() that does more than self.layers: the scripts would read another network
    class Normalised(Classifier):
        def forward(self, x):
            return self.layers((x - 0.1307) / 0.3081)
    with pytest.raises(ValueError, match=r'forward\(\) computes more than self.layers\(x\)'):
        Normalised().summary()
    # a layer of its own making after the last convolution: an activation or not?
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)
    model, *_ = network('blog')
    model.layers[7] = Swish()
    with pytest.raises(ValueError, match=r'layers\[7\] = Swish\(\) is not a torch.nn layer'):
        model.summary()
    Swish.is_activation = True                                         # said so: skipped in "pre"
    model.summary()
    x = torch.rand(3, 1, 32, 32)
    pre, post = model.eval().features(x, after_relu=False), model.features(x, after_relu=True)
    torch.testing.assert_close(pre, F.avg_pool2d(model.layers[:7](x), 4).flatten(1))
    assert not torch.equal(pre, post)

# -----------------------------------------------------------------------------
# the feature vector

def reference_features(model, x, after_relu):
    """The blog's features, written out with torch.nn.functional and the model's weights."""
    L = model.layers
    h = F.max_pool2d(F.relu(F.conv2d(x, L[0].weight, L[0].bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, L[3].weight, L[3].bias, padding=1)), 2)
    h = F.conv2d(h, L[6].weight, L[6].bias, padding=1)
    if after_relu:
        h = F.relu(h)
    return h.reshape(len(x), 32, 2, 4, 2, 4).mean(dim=(3, 5)).reshape(len(x), 128)

@pytest.mark.parametrize('after_relu', [False, True])
def test_blog_features_match_a_functional_computation(after_relu):
    model = network('blog')[0].eval()
    x = torch.rand(7, 1, 32, 32)
    torch.testing.assert_close(model.features(x, after_relu=after_relu), reference_features(model, x, after_relu))
    # pre-ReLU features take negative values; post-ReLU ones never do
    assert (model.features(x, after_relu=False) < 0).any()
    assert (model.features(x, after_relu=True) >= 0).all()

def without_activations(model, conv, head):
    """A copy of the network's layers up to the linear layer, with the activations and
    dropout after the last convolution replaced by nn.Identity: the 'pre' features' path."""
    layers = [nn.Identity() if i > conv and (is_activation(m) or isinstance(m, nn.Dropout)) else m
              for i, m in enumerate(model.layers[:head])]
    return nn.Sequential(*layers)

@pytest.mark.parametrize('name', ALL)
def test_features_of_each_network(name):
    model, _, conv, D = network(name)
    model.eval()
    head = model.feature_layers()[1]
    x = torch.rand(6, 1, 32, 32)
    # post: the input of the linear layer, caught by a hook on it
    seen = []
    handle = model.layers[head].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    logits = model(x)
    handle.remove()
    f_post, logits2 = model.features_and_logits(x, after_relu=True)
    assert f_post.shape == (6, D)
    torch.testing.assert_close(f_post, seen[0].flatten(1))
    torch.testing.assert_close(logits2, logits)
    # pre: the same layers with the activations after the last convolution taken out
    f_pre, _ = model.features_and_logits(x, after_relu=False)
    torch.testing.assert_close(f_pre, without_activations(model, conv, head)(x).flatten(1))
    assert (f_pre < 0).any() and not torch.equal(f_pre, f_post)       # an in-place ReLU must not reach pre

def test_dropout_then_an_in_place_relu_leaves_pre_alone():
    model, *_ = network('blog')
    # the last convolution, then dropout before an in-place ReLU, pooling, flatten
    model.layers = nn.Sequential(*model.layers[:7], nn.Dropout(), nn.ReLU(inplace=True), *model.layers[8:10],
                                 nn.Linear(128, 10))
    model.eval()
    x = torch.rand(4, 1, 32, 32)
    pre = model.features(x, after_relu=False)
    torch.testing.assert_close(pre, F.avg_pool2d(model.layers[:7](x), 4).flatten(1))
    assert (pre < 0).any()

@pytest.mark.parametrize('name', ['blog', 'batchnorm'])
def test_features_and_logits_in_training_mode(name):
    model = network(name)[0].train()
    x = torch.rand(6, 1, 32, 32)
    torch.manual_seed(1)
    _, a = model.features_and_logits(x, after_relu=False)
    torch.manual_seed(1)
    torch.testing.assert_close(a, model(x))                          # dropout's mask and batch norm as model(x)

def test_a_network_without_the_parts_the_features_need():
    model = Classifier()
    model.layers = nn.Sequential(nn.Flatten(), nn.Linear(1024, 10))
    with pytest.raises(ValueError, match='no nn.Conv2d'):
        model.feature_size()
    model.layers = nn.Sequential(nn.Conv2d(1, 10, 32), nn.Flatten())
    with pytest.raises(ValueError, match='no nn.Linear after the last nn.Conv2d'):
        model.feature_size()

def test_the_current_network_runs_end_to_end():
    # whatever model.py builds now: the summary runs, and the features meet the logits
    model = Classifier().eval()
    model.summary()
    x = torch.rand(4, 1, 32, 32)
    f, logits = model.features_and_logits(x, after_relu=True)
    assert f.shape == (4, model.feature_size()) and logits.shape == (4, 10)
    torch.testing.assert_close(logits, model(x))

# -----------------------------------------------------------------------------
# checkpoints

def test_load_classifier_refuses_another_network(tmp_path, capsys):
    other = other_network()
    assert other.state_dict().keys() == Classifier().state_dict().keys()   # the weights would load
    save_model(tmp_path / 'other.pt', other, epoch=2)
    with pytest.raises(ValueError) as e:
        load_classifier(tmp_path / 'other.pt')
    message = str(e.value)
    assert message.startswith(f'{tmp_path / "other.pt"} was trained with another network than model.py builds now')
    assert ' was Tanh(), is ' in message or ' was ReLU(), is ' in message       # the checkpoint's, then model.py's
    assert message.endswith('python train.py trains the current one') and '\n' not in message
    # the same network is accepted without a word; weights without a record of their network, refused
    save_model(tmp_path / 'same.pt', Classifier(), epoch=2)
    assert load_classifier(tmp_path / 'same.pt')[1]['epoch'] == 2 and capsys.readouterr().err == ''
    torch.save({'model': Classifier().state_dict(), 'epoch': 1}, tmp_path / 'bare.pt')
    with pytest.raises(ValueError, match='needs "model" and "architecture" entries'):
        load_classifier(tmp_path / 'bare.pt')

def test_network_diff_names_the_layers():
    from model import network_diff
    blog = network('blog')[0].architecture()
    assert network_diff(blog, network('no dropout')[0].architecture()) == 'layers.10 Dropout(p=0.5, inplace=False) is gone'
    assert network_diff(blog, network('extra conv')[0].architecture()) == \
        'layers.8 Conv2d(32, 32, kernel_size=(3, 3), stride=(1, 1), padding=same), ReLU() is new'
    assert network_diff(blog, network('wider')[0].architecture()) == (
        'layers.0 was Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=same), '
        'is Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=same); '
        'layers.3 was Conv2d(8, 16, kernel_size=(3, 3), stride=(1, 1), padding=same), '
        'is Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=same); '
        'layers.6 was Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=same), '
        'is Conv2d(32, 64, kernel_size=(3, 3), stride=(1, 1), padding=same); and 1 more')
    gelu = network_diff(blog, network('global average pool, GELU')[0].architecture())
    assert gelu.startswith("layers.1 was ReLU(), is GELU(approximate='none'); layers.4 was ReLU()")
    assert gelu.endswith('; and 2 more')                              # three shown, the rest counted
    assert 'not a list of layers' in network_diff({'a': 1}, blog)
    assert network_diff([*blog, 'layers.12: ReLU()'], blog) == 'layers.12 ReLU() is gone'   # the last layer

def test_get_device(monkeypatch):
    assert get_device('cpu') == 'cpu'
    assert get_device('auto') in ('cuda', 'mps', 'cpu')
    # auto: cuda first, then mps, then cpu (the machines are pretended here)
    for cuda, mps, want in ((True, True, 'cuda'), (False, True, 'mps'), (False, False, 'cpu')):
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, 'is_available', lambda: cuda)
            m.setattr(torch.backends.mps, 'is_available', lambda: mps)
            assert get_device('auto') == want
            if not mps:
                with pytest.raises(ValueError, match=r'--device mps: this PyTorch \(.*\) sees no MPS GPU'):
                    get_device('mps')
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        get_device('gpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='sees no CUDA GPU'):
            get_device('cuda:0')

def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='run python train.py first'):
        load_classifier(tmp_path / 'missing.pt')
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a checkpoint') as e:
        load_classifier(garbage)
    assert str(garbage) in str(e.value)
    assert '\n' not in str(e.value)                                  # PyTorch's first line, not its paragraph
    # weights that do not fit the network they claim: a clear message, not a state_dict traceback
    other = tmp_path / 'other.pt'
    torch.save({'model': nn.Linear(3, 2).state_dict(), 'architecture': Classifier().architecture()}, other)
    with pytest.raises(ValueError, match='do not fit model.Classifier'):
        load_classifier(other)
    state = Classifier().state_dict()
    del state['layers.0.bias']                                        # one weight missing, the rest fits
    torch.save({'model': state, 'architecture': Classifier().architecture()}, other)
    with pytest.raises(ValueError, match=r"do not fit model.Classifier .*'layers.0.bias', \(8,\)"):
        load_classifier(other)
    no_model = tmp_path / 'no_model.pt'
    torch.save({'weights': 1}, no_model)
    with pytest.raises(ValueError, match='needs "model" and "architecture" entries'):
        load_classifier(no_model)

def test_load_classifier_checks_every_field(tmp_path):
    model = Classifier()
    good = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = list(good)[:2]                                    # e.g. layers.0.weight, layers.0.bias
    nan = {**good, first: good[first].clone().fill_(float('nan'))}
    arch = model.architecture()
    cases = [({'model': [1, 2], 'architecture': arch}, '"model" must be a dict of tensors'),
             ({'model': {**good, second: 3}, 'architecture': arch}, '"model" must be a dict of tensors'),
             ({'model': nan, 'architecture': arch}, rf"the weights \['{first}'\] hold NaN"),
             ({'model': good, 'architecture': arch, 'epoch': 'ten'}, '"epoch" must be a whole number'),
             ({'model': good, 'architecture': arch, 'epoch': -1}, '"epoch" must be a whole number'),
             ({'model': good, 'architecture': 'a string'}, 'its record of the network is a str')]
    for i, (ckpt, message) in enumerate(cases):
        torch.save(ckpt, tmp_path / f'{i}.pt')
        with pytest.raises(ValueError, match=message) as e:
            load_classifier(tmp_path / f'{i}.pt')
        assert f'{i}.pt' in str(e.value) and '\n' not in str(e.value)
    torch.save({'model': good, 'architecture': arch, 'epoch': 3}, tmp_path / 'ok.pt')
    assert load_classifier(tmp_path / 'ok.pt')[1]['epoch'] == 3

@pytest.mark.parametrize('name', ['meta', 'xpu', 'hpu'])
def test_get_device_only_what_the_scripts_run_on(name):
    with pytest.raises(ValueError, match=f'--device {name}: these scripts run on cpu, cuda or mps'):
        get_device(name)

def test_a_broken_model_py_is_named_before_any_checkpoint(tmp_path, monkeypatch):
    # a checkpoint of the blog's network, and a model.py whose linear layer does not fit:
    # the message must send the reader to model.py, not to `python train.py`
    import model as model_py
    save_model(tmp_path / 'c.pt', Classifier(), epoch=1)
    def broken():
        m = Classifier()
        m.layers[m.feature_layers()[1]] = nn.Linear(m.feature_size() + 1, 10)
        return m
    monkeypatch.setattr(model_py, 'Classifier', broken)
    with pytest.raises(ValueError, match=r'^model.py: layers\[\d+\] = Linear.*in_features should be'):
        load_classifier(tmp_path / 'c.pt')
