"""Mini-batches of an in-memory dataset built with tensor ops only (no DataLoader)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .core import DataError, ImageDataset

__all__ = ["Batches"]




class Batches:
    """Mini-batches of a prepared dataset, built with tensor ops only.

    Iterating yields one epoch of ``(x, y)``: ``x`` float32 ``B x C x H x W``
    normalised with ``mean``/``std`` (given on the [0, 1] scale), in
    channels_last memory format when requested; ``y`` int64.  Each iteration
    reshuffles (if ``shuffle``) with one seeded generator, so a run is
    reproducible from its seed.  Augmentation (``augment``) is a random crop
    from the image zero-padded by ``pad`` pixels (default ``resolution / 8``)
    and, if ``flip``, a random horizontal flip -- both done as one gather.
    The uint8 data moves to ``device`` once, up front.
    """

    def __init__(
        self,
        ds: ImageDataset,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: bool = False,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        flip: bool = True,
        pad: int | None = None,
        channels_last: bool = True,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size {batch_size!r} invalid; expected a positive int")
        channels = ds.in_channels
        if len(mean) != channels or len(std) != channels:
            raise DataError(
                f"mean {tuple(mean)} / std {tuple(std)} invalid for {ds.name}; "
                f"expected {channels} value(s) each"
            )
        if not all(s > 0 for s in std):
            raise DataError(f"std {tuple(std)} invalid; expected every value > 0")
        height, width = ds.image_size
        pad = max(1, round(min(height, width) / 8)) if pad is None else pad
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise DataError(f"pad {pad!r} invalid; expected an int >= 0")
        num_batches = len(ds) // batch_size if drop_last else math.ceil(len(ds) / batch_size)
        if num_batches == 0:
            raise DataError(
                f"{ds.name}: {len(ds)} images give no batch of size {batch_size}"
                f"{' with drop_last=True' if drop_last else ''}; expected at least one"
            )
        self.dataset = ds
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.flip = flip
        self.pad = pad
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._num_batches = num_batches
        self._images = ds.images.to(self.device)
        self._labels = ds.labels.to(self.device)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # x_norm = (x/255 - mean)/std = x * scale + shift, applied in place on the batch.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(self._num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            images = self._images[idx]
            if self.augment:
                images = self._crop_and_flip(images)
            yield self._normalise(images), self._labels[idx]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.to(torch.float32, memory_format=memory_format)
        return x.mul_(self._scale).add_(self._shift)

    def _crop_and_flip(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop of the zero-padded batch plus optional flip, as one gather per batch."""
        count, _, height, width = images.shape
        pad = self.pad
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        offset_y = torch.randint(0, 2 * pad + 1, (count, 1), generator=self.generator)
        offset_x = torch.randint(0, 2 * pad + 1, (count, 1), generator=self.generator)
        rows = offset_y + torch.arange(height)
        cols = torch.arange(width).expand(count, width)
        if self.flip:
            flipped = torch.rand(count, 1, generator=self.generator) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        cols = offset_x + cols
        batch_index = torch.arange(count).view(count, 1, 1)
        rows, cols = rows.to(self.device), cols.to(self.device)
        # Advanced indices around the channel slice put their dims first: B x H x W x C.
        gathered = padded[batch_index.to(self.device), :, rows[:, :, None], cols[:, None, :]]
        return gathered.permute(0, 3, 1, 2)

