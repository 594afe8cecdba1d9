"""ref_losses.py: the GAN losses of nn/losses.h in PyTorch, for tests/test_losses.cpp.

Every case is recorded twice, "<name>.f64" and "<name>.f32" (same values, converted), with the
parity_lib layout (inputs, outputs, first gradients). Cases:
  adv        l [6] (with large |l| to exercise softplus's stable branch) -> d_loss_real,
             d_loss_fake, g_loss (mean softplus(-l), mean softplus(l), mean softplus(-l))
  adv_list   three real and three fake [4] predictions -> d_loss (sum over k of both terms),
             g_loss(list), d_loss_real(list), d_loss_fake(list)
  match      two real-mismatched and two fake-mismatched [4] predictions -> d_match_loss
             (sum mean softplus of both lists), g_match_loss (sum mean softplus(fake_mismatched);
             the inferred G-side form, nn/losses.h)
  roll       t [5, 3] -> torch.roll(t, s, 0) for s in 1, -2, 7, 0, 5
  r1         a two-level "discriminator" with parameters W0 [4, 3], W1 [4, 2] and a two-level
             input pyramid x0 [5, 3], x1 [5, 1, 2]:
               h0 = tanh(x0 W0^T);  h1 = tanh(flatten(x1) W1^T + h0)
               outputs: sum(h0, 1), sum(h1, 1), sum(h0 * h1, 1)   (three [B] predictions)
             r1 = gamma/2 * mean_b(sum g0^2 + sum g1^2), g = grad(sum of all outputs, (x0, x1),
             create_graph=True), gamma = 0.75. The recorded grad/W0, grad/W1 are the
             double-backward gradients of D that lazy R1 applies to the weights.
"""
import torch

import parity_lib

GAMMA = 0.75


def adv(l):
    return (torch.nn.functional.softplus(-l).mean(), torch.nn.functional.softplus(l).mean(),
            torch.nn.functional.softplus(-l).mean())


def sp(x):
    return torch.nn.functional.softplus(x)


def adv_list(r0, r1, r2, f0, f1, f2):
    real, fake = [r0, r1, r2], [f0, f1, f2]
    d_real = sum(sp(-r).mean() for r in real)
    d_fake = sum(sp(f).mean() for f in fake)
    g = sum(sp(-f).mean() for f in fake)
    return d_real + d_fake, g, d_real, d_fake


def match(rm0, rm1, fm0, fm1):
    d = sp(rm0).mean() + sp(rm1).mean() + sp(fm0).mean() + sp(fm1).mean()
    g = sp(fm0).mean() + sp(fm1).mean()
    return d, g


def roll(t):
    return tuple(torch.roll(t, s, 0) for s in (1, -2, 7, 0, 5))


def disc(x0, x1, w0, w1):
    h0 = torch.tanh(x0 @ w0.T)
    h1 = torch.tanh(x1.flatten(1) @ w1.T + h0)
    return [h0.sum(1), h1.sum(1), (h0 * h1).sum(1)]


def r1(x0, x1, w0, w1):
    outs = disc(x0, x1, w0, w1)
    total = sum(o.sum() for o in outs)
    g0, g1 = torch.autograd.grad(total, (x0, x1), create_graph=True)
    per_sample = g0.square().flatten(1).sum(1) + g1.square().flatten(1).sum(1)
    return GAMMA / 2 * per_sample.mean()


def build(r):
    b = 5
    l = torch.randn(6, dtype=torch.float64) * 3
    l[0], l[1] = 30.0, -25.0
    lists = [torch.randn(4, dtype=torch.float64) * 2 for _ in range(6)]
    mlists = [torch.randn(4, dtype=torch.float64) * 2 for _ in range(4)]
    t = torch.randn(5, 3, dtype=torch.float64)
    xs = [torch.randn(b, 3, dtype=torch.float64), torch.randn(b, 1, 2, dtype=torch.float64),
          torch.randn(4, 3, dtype=torch.float64) * 0.7, torch.randn(4, 2, dtype=torch.float64) * 0.7]
    for dt, name in ((torch.float64, "f64"), (torch.float32, "f32")):
        r.case(f"adv.{name}", adv, [l.to(dt)], double_backward=False)
        r.case(f"adv_list.{name}", adv_list, [x.to(dt) for x in lists], double_backward=False)
        r.case(f"match.{name}", match, [x.to(dt) for x in mlists], double_backward=False)
        r.case(f"roll.{name}", roll, [t.to(dt)], double_backward=False)
        r.case(f"r1.{name}", r1, [x.to(dt) for x in xs], double_backward=False)


if __name__ == "__main__":
    parity_lib.main(__file__, 11, build)
