"""segmentation_models_pytorch's ``Unet`` trained the way a user writes a plain PyTorch loop: the reference side of
bench_few_large.py and bench_camvid.py.

Random crops (padded with ignore when an image is smaller) + horizontal flips, AdamW at a fixed lr, cosine over the
steps the wall-clock budget is estimated to hold, cross-entropy with ignore_index, bf16 autocast only on CPUs with
native bf16, channels_last; no validation; the weights at the end of the budget are the result.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass
class SmpRun:
    """What the loop trained and how: ``predict(image) -> (H, W) labels`` at the image's own size, and its figures."""

    predict: Callable[[np.ndarray], np.ndarray]
    steps: int
    seen: int
    epochs: float
    train_s: float
    params: int
    precision: str
    losses: list  # the training loss of every step, in order
    lrs: list  # the learning rate each step was taken with


def train_smp_unet(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], num_classes: int, ignore_index: int,
                   minutes: float, crop: int, batch: int, lr: float = 1e-3, encoder: str = "resnet34",
                   seed: int = 0, make_model: Callable | None = None, max_steps: int = 0) -> SmpRun:
    """Train ``smp.Unet(encoder, encoder_weights=None)`` on random ``crop`` windows for ``minutes`` of wall time.

    ``make_model(in_channels, num_classes)`` trains another model in the same loop on the same windows in the same
    order (a control: what is the model's doing and what the loop's); ``max_steps`` > 0 also stops there and fits
    the cosine to it.
    """
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    from seglab.runtime.precision import cpu_supports_bf16

    torch.manual_seed(seed)
    np.random.seed(seed)
    in_ch = images[0].shape[2]
    stack = np.concatenate([im.reshape(-1, in_ch) for im in images]).astype(np.float64) / 255
    mean, std = stack.mean(0), stack.std(0) + 1e-6  # the training set's per-channel statistics
    del stack

    def to_tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((img.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1).astype(np.float32))

    class Crops(Dataset):
        """A random crop x crop window of each image (padded when smaller) with a random horizontal flip."""

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            img, m = images[i], masks[i]
            h, w = m.shape
            ph, pw = max(0, crop - h), max(0, crop - w)
            if ph or pw:
                img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
                m = np.pad(m, ((0, ph), (0, pw)), constant_values=ignore_index)
                h, w = m.shape
            y, x = np.random.randint(0, h - crop + 1), np.random.randint(0, w - crop + 1)
            img, m = img[y:y + crop, x:x + crop], m[y:y + crop, x:x + crop]
            if np.random.rand() < 0.5:
                img, m = img[:, ::-1], m[:, ::-1]
            return to_tensor(np.ascontiguousarray(img)), torch.from_numpy(np.ascontiguousarray(m))

    bf16 = cpu_supports_bf16()
    if make_model is None:
        model = smp.Unet(encoder, encoder_weights=None, in_channels=in_ch, classes=num_classes)
    else:
        model = make_model(in_ch, num_classes)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    # The shuffle order has its own generator, so models that draw different amounts of random numbers at their
    # initialisation still see the same windows in the same order.
    loader = DataLoader(Crops(), batch_size=batch, shuffle=True, drop_last=len(images) > batch, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    budget, steps, seen, epochs, est_total, losses, lrs = minutes * 60, 0, 0, 0, max_steps or None, [], []
    model.train()
    t0 = time.perf_counter()
    t1 = None  # end of the first step (its time includes one-off warm-up, left out of the step-time estimate)
    done, loss = False, torch.zeros(())
    while not done:
        for x, y in loader:
            # cosine over the steps the budget is estimated to hold (re-estimated from the mean step time)
            step_lr = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, steps / est_total))) if est_total else lr
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, seen = steps + 1, seen + len(x)
            losses.append(round(loss.item(), 5))
            lrs.append(step_lr)
            now = time.perf_counter()
            if t1 is None:
                t1 = now
            elif steps >= 3 and not max_steps:
                per_step = (now - t1) / (steps - 1)
                est_total = steps + max(0.0, budget - (now - t0)) / per_step
            if now - t0 >= budget or steps == max_steps:
                done = True
                break
        else:
            epochs += 1
    train_s = time.perf_counter() - t0
    precision = ("bf16" if bf16 else "fp32") + " + channels_last"
    who = "smp" if make_model is None else "model"
    print(f"{who} in the plain loop: {steps} steps, {seen} crops, {train_s:.0f} s, last loss {loss.item():.4f}, "
          f"{precision}", flush=True)
    model.eval()

    @torch.inference_mode()
    def predict(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        x = to_tensor(img)[None]
        ph, pw = -h % 32, -w % 32  # smp's Unet needs sides divisible by 32
        x = F.pad(x, (0, pw, 0, ph), mode="reflect").contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        return logits[0, :, :h, :w].argmax(0).numpy()

    return SmpRun(predict, steps, seen, round(seen / len(images), 1), train_s,
                  sum(p.numel() for p in model.parameters()), precision, losses, lrs)
