"""The eval-openvocab harness per benchmark protocol, as ``run_all.py`` runs it.

Rows of :func:`openvocab.run_protocols` for VOC21 (with background, short side 336) and ADE20K-150
(short side 336, 150 classes), on a 375x500 random image (a VOC-sized photo) and the base NaFlex tower
with random weights: harness images/s over a bare transformers forward of the same 224 / 112 windows
(target >= 0.85), and ProxyCLIP's time and weight memory next to the plain variant (reported).

Run: ``python benchmarks/openvocab_protocols.py`` (or ``python benchmarks/openvocab.py --protocols voc21,ade20k``).
"""

from __future__ import annotations

from measure import Figure, print_figures
from openvocab import run_protocols

PROTOCOLS = ["voc21", "ade20k"]
IMAGE_SIZE = (375, 500)


def run() -> list[Figure]:
    return run_protocols(PROTOCOLS, IMAGE_SIZE)


if __name__ == "__main__":
    print_figures("eval-openvocab harness, base NaFlex, CPU", run())
