"""A WGAN-style loop: one module holds a generator and a critic, each with its own optimizer, and the critic
steps 5 times per generator step. At the critic's steps the generator has no gradient, by design."""
import torch


class GAN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
        self.critic = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


torch.manual_seed(0)
gan = GAN()
opt_g = torch.optim.Adam(gan.generator.parameters(), lr=1e-3)
opt_c = torch.optim.Adam(gan.critic.parameters(), lr=1e-3)
real = torch.randn(64, 8) + 2
for it in range(4):
    for _ in range(5):
        fake = gan.generator(torch.randn(16, 4)).detach()
        batch = real[torch.randint(0, 64, (16,))]
        loss_c = gan.critic(fake).mean() - gan.critic(batch).mean()
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
    loss_g = -gan.critic(gan.generator(torch.randn(16, 4))).mean()
    opt_g.zero_grad(set_to_none=True)
    gan.critic.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    print(f"iteration {it} critic {loss_c.item():.3f} generator {loss_g.item():.3f}")
