"""C: a linear map from what it sees (controller.inputs: [z, h] as in the paper, z alone, or [z, h, c])
to action logits, played by argmax; and V+M+C as a batched policy.

For Space Invaders (z=32, h=256, 6 actions) a [z, h] controller is (32 + 256) * 6 + 6 = 1,734
numbers, a z-only one (32 + 1) * 6 = 198, a [z, h, c] one (32 + 512) * 6 + 6 = 3,270. CMA-ES searches
that flat vector; `unflatten` turns a population of vectors into weights that are applied to a
whole batch of episodes with one batched matrix product.
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodels.config import INPUTS


def features(z_size: int, hidden: int, inputs: str = "zh") -> int:
    """How many numbers C sees: z, plus h and c (each `hidden` long) as `inputs` names them."""
    return z_size + hidden * (len(INPUTS[inputs]) - 1)


def controller_size(z_size: int, hidden: int, actions: int, inputs: str = "zh") -> int:
    return features(z_size, hidden, inputs) * actions + actions


def unflatten(params: torch.Tensor, z_size: int, hidden: int, actions: int,
              inputs: str = "zh") -> tuple[torch.Tensor, torch.Tensor]:
    """Flat controllers [P, size] -> weights [P, actions, features] and biases [P, actions]."""
    size = controller_size(z_size, hidden, actions, inputs)
    if params.shape[-1] != size:
        raise ValueError(f"controller has {params.shape[-1]} parameters, expected {size} for inputs {inputs} "
                         f"(z={z_size}, h={hidden}), {actions} actions")
    n = features(z_size, hidden, inputs) * actions
    return params[:, :n].reshape(-1, actions, n // actions), params[:, n:]


def flatten(weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """The inverse of unflatten."""
    return torch.cat([weights.reshape(weights.shape[0], -1), biases], dim=1)


def seen(inputs: str, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """C's input [N, features]: z, h and c as `inputs` names them."""
    parts = {"z": z, "h": h, "c": c}
    return torch.cat([parts[name] for name in INPUTS[inputs]], dim=1)


def act(weights: torch.Tensor, biases: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Argmax actions [N] of per-episode controllers (weights [N, A, D], biases [N, A]) on inputs x [N, D]."""
    return (torch.bmm(weights, x.unsqueeze(-1)).squeeze(-1) + biases).argmax(dim=1)


class WorldModelPolicy:
    """V encodes each frame (its mean), C picks the action from [z, h] (or what `inputs` names), M
    folds (z, a) into h and c.

    Each episode's job tag names its controller: a row of `params` [P, size]. Everything runs
    on V's device; frames go there and actions come back once per step.
    """

    def __init__(self, vae, mdnrnn, params: torch.Tensor, batch: int, inputs: str = "zh"):
        self.vae, self.mdnrnn, self.inputs = vae, mdnrnn, inputs
        self.device = device = next(vae.parameters()).device
        self.weights, self.biases = unflatten(params.float().to(device), vae.z_size, mdnrnn.hidden, mdnrnn.actions, inputs)
        self.h = torch.zeros(batch, mdnrnn.hidden, device=device)
        self.c = torch.zeros(batch, mdnrnn.hidden, device=device)
        self.which = torch.zeros(batch, dtype=torch.long, device=device)

    def begin(self, slot: int, job) -> None:
        self.h[slot] = 0
        self.c[slot] = 0
        self.which[slot] = int(job.tag)

    def end(self, slot: int, played) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: np.ndarray, slots: np.ndarray, replace=None) -> np.ndarray:
        """C's actions; `replace(actions)`, when given, may change some before M folds them in (exploration)."""
        from worldmodels.device import rowwise
        from worldmodels.vae import means

        idx = torch.from_numpy(slots).to(self.device)
        # row by row: an episode's actions never depend on which episodes share its batch
        z = means(self.vae, torch.from_numpy(obs).to(self.device))
        which = self.which[idx]
        actions = act(self.weights[which], self.biases[which], seen(self.inputs, z, self.h[idx], self.c[idx]))
        if replace is not None:
            actions = torch.from_numpy(replace(actions.cpu().numpy())).to(self.device)
        if self.inputs != "z":  # a controller that sees z alone needs no memory: M's step is skipped
            x = torch.cat([z, torch.nn.functional.one_hot(actions, self.mdnrnn.actions).float()], 1)
            self.h[idx], self.c[idx] = rowwise(self.mdnrnn, self._lstm_step, x, self.h[idx], self.c[idx])
        return actions.cpu().numpy()

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, c) = self.mdnrnn.lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        return h[0], c[0]
