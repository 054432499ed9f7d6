"""Which NVIDIA driver a GPU needs, as a data table with the source of every row.

The seed workflow's worst trap is a driver that does not fit the card: a Tesla K80 (Kepler)
is dropped by every driver after R470, and the open kernel modules, NVIDIA's default since
R560, do not drive anything older than Turing. So the decision is data, not code: a GPU's PCI
device id (or the chip name lspci prints, or the marketing name nvidia-smi prints) gives its
generation, the generation gives a row, and the row names the driver branch, the kernel module
flavour, the Ubuntu packages to try in order and the newest CUDA that branch can run.
`orchestrate gpus` prints `table_rows()`.

Nothing here talks to a host: the probe (`orchestrate.core.host.probe`) brings the PCI ids and the
nvidia-smi text, the driver step turns the chosen row into a script.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NVIDIA_VENDOR = "10de"

# Sources, named once so every row can point at them.
SRC_LEGACY = "https://www.nvidia.com/en-us/drivers/unix/legacy-gpu/"
SRC_DEPRECATION = (
    "https://forums.developer.nvidia.com/t/unix-graphics-feature-deprecation-schedule/60588"
)
SRC_OPEN_MODULES = (
    "https://developer.nvidia.com/blog/"
    "nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/"
)
SRC_DRIVER_GUIDE = "https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/"
SRC_CUDA_TABLE = (
    # table "CUDA Toolkit and Corresponding Driver Versions"
    "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#cuda-driver"
)
SRC_UBUNTU = "https://ubuntu.com/server/docs/nvidia-drivers-installation"


@dataclass(frozen=True)
class Generation:
    """One GPU architecture: the chip-name prefix lspci shows and the CUDA compute capability."""

    key: str
    label: str
    chip_prefix: str
    compute: str


GENERATIONS: tuple[Generation, ...] = (
    Generation("kepler", "Kepler", "GK", "3.x"),
    Generation("maxwell", "Maxwell", "GM", "5.x"),
    Generation("pascal", "Pascal", "GP", "6.x"),
    Generation("volta", "Volta", "GV", "7.0"),
    Generation("turing", "Turing", "TU", "7.5"),
    Generation("ampere", "Ampere", "GA", "8.0/8.6"),
    Generation("ada", "Ada Lovelace", "AD", "8.9"),
    Generation("hopper", "Hopper", "GH", "9.0"),
    Generation("blackwell", "Blackwell", "GB", "10.0"),
)
_BY_KEY = {g.key: g for g in GENERATIONS}
_BY_PREFIX = {g.chip_prefix: g for g in GENERATIONS}


@dataclass(frozen=True)
class DriverRow:
    """The driver a set of generations gets.

    ``flavours`` are Ubuntu package suffixes tried in order (``nvidia-headless-<flavour>``):
    the first one the host's archive has wins, so an older Ubuntu release still gets the newest
    branch it carries. ``modules`` is "open" or "proprietary" (the kernel module source).
    """

    generations: tuple[str, ...]
    branch: int
    modules: str
    flavours: tuple[str, ...]
    max_cuda: str
    why: str
    sources: tuple[str, ...]


DRIVER_ROWS: tuple[DriverRow, ...] = (
    DriverRow(
        generations=("kepler",),
        branch=470,
        modules="proprietary",
        flavours=("470-server", "470"),
        max_cuda="11.4",
        why="R470 is the last branch that supports Kepler (Tesla K80); it is legacy now, "
        "so Kepler hosts stay on CUDA 11.4 images",
        sources=(SRC_LEGACY, SRC_UBUNTU, SRC_CUDA_TABLE),
    ),
    DriverRow(
        generations=("maxwell", "pascal", "volta"),
        branch=580,
        modules="proprietary",
        flavours=("580-server", "570-server", "535-server"),
        max_cuda="13.0",
        why="the open kernel modules need Turing or newer; R580 is the last branch for "
        "Maxwell, Pascal and Volta",
        sources=(SRC_OPEN_MODULES, SRC_DEPRECATION, SRC_UBUNTU, SRC_CUDA_TABLE),
    ),
    DriverRow(
        generations=("turing", "ampere", "ada", "hopper", "blackwell"),
        branch=580,
        modules="open",
        flavours=("580-server-open", "570-server-open", "535-server-open"),
        max_cuda="13.0",
        why="open kernel modules are NVIDIA's default since R560 and the only ones for Blackwell",
        sources=(SRC_OPEN_MODULES, SRC_DRIVER_GUIDE, SRC_UBUNTU, SRC_CUDA_TABLE),
    ),
)

#: Newest CUDA each driver branch runs (CUDA toolkit release notes, "CUDA Toolkit and
#: Corresponding Driver Versions"). A branch between two rows takes the lower row's value.
CUDA_BY_BRANCH: tuple[tuple[int, str], ...] = (
    (450, "11.0"),
    (455, "11.1"),
    (460, "11.2"),
    (465, "11.3"),
    (470, "11.4"),
    (495, "11.5"),
    (510, "11.6"),
    (515, "11.7"),
    (520, "11.8"),
    (525, "12.0"),
    (530, "12.1"),
    (535, "12.2"),
    (545, "12.3"),
    (550, "12.4"),
    (555, "12.5"),
    (560, "12.6"),
    (565, "12.7"),
    (570, "12.8"),
    (575, "12.9"),
    (580, "13.0"),
)


@dataclass(frozen=True)
class GpuModel:
    """A data-centre GPU clouds rent out, by PCI device id."""

    device_id: str
    name: str
    generation: str


#: Device ids from the PCI ID repository (https://pci-ids.ucw.cz/read/PC/10de); the models
#: the big clouds offer. Anything else is classified by chip name or by id range.
GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("102d", "Tesla K80", "kepler"),
    GpuModel("13f2", "Tesla M60", "maxwell"),
    GpuModel("15f7", "Tesla P100 PCIe 12GB", "pascal"),
    GpuModel("15f8", "Tesla P100 PCIe 16GB", "pascal"),
    GpuModel("15f9", "Tesla P100 SXM2 16GB", "pascal"),
    GpuModel("1b38", "Tesla P40", "pascal"),
    GpuModel("1bb3", "Tesla P4", "pascal"),
    GpuModel("1db1", "Tesla V100 SXM2 16GB", "volta"),
    GpuModel("1db4", "Tesla V100 PCIe 16GB", "volta"),
    GpuModel("1db5", "Tesla V100 SXM2 32GB", "volta"),
    GpuModel("1db6", "Tesla V100 PCIe 32GB", "volta"),
    GpuModel("1df6", "Tesla V100S PCIe 32GB", "volta"),
    GpuModel("1eb8", "Tesla T4", "turing"),
    GpuModel("20b0", "A100 SXM4 40GB", "ampere"),
    GpuModel("20b2", "A100 SXM4 80GB", "ampere"),
    GpuModel("20b5", "A100 PCIe 80GB", "ampere"),
    GpuModel("20f1", "A100 PCIe 40GB", "ampere"),
    GpuModel("2236", "A10", "ampere"),
    GpuModel("2237", "A10G", "ampere"),
    GpuModel("26b5", "L40", "ada"),
    GpuModel("26b9", "L40S", "ada"),
    GpuModel("27b8", "L4", "ada"),
    GpuModel("2321", "H100 NVL", "hopper"),
    GpuModel("2330", "H100 SXM5 80GB", "hopper"),
    GpuModel("2331", "H100 PCIe", "hopper"),
    GpuModel("2335", "H200 SXM 141GB", "hopper"),
    GpuModel("2901", "B200", "blackwell"),
)
_MODEL_BY_ID = {m.device_id: m for m in GPU_MODELS}

#: Marketing-name tokens as nvidia-smi prints them ("Tesla K80", "NVIDIA L4") -> generation.
_NAME_TOKENS: tuple[tuple[str, str], ...] = (
    (r"\bK(?:10|20|40|80)\w*", "kepler"),
    (r"\bM(?:4|6|10|40|60)\b", "maxwell"),
    (r"\bP(?:4|6|40|100)\b", "pascal"),
    (r"\bV100", "volta"),
    (r"\bT4\b", "turing"),
    (r"\bA(?:2|10G?|16|30|40|100|800)\b", "ampere"),
    (r"\bL(?:4|40S?)\b", "ada"),
    (r"\bH(?:100|200|800)\b", "hopper"),
    (r"\bB(?:100|200)\b", "blackwell"),
)

UNKNOWN = "unknown"


def generation(key: str) -> Generation:
    """The generation called `key` ("kepler", ...)."""
    return _BY_KEY[key]


def generation_of(device_id: str, name: str = "") -> str:
    """The generation key of one NVIDIA GPU, from its PCI device id and any name we have.

    Order: the chip name in an lspci line ("GK210GL" -> Kepler) is the most direct; then
    the known-model table; then the nvidia-smi name; then the id range: ids from 0x1e00 up
    are Turing or newer (the first Turing chips are 0x1e0x), so an unknown new card gets the
    open modules instead of an error. Returns "unknown" only for an unknown pre-Turing id.
    """
    chip = re.search(r"\b(G[KMPVAHB]|TU|AD)\d{2,3}[A-Z]*\b", name)
    if chip and chip.group(1) in _BY_PREFIX:
        return _BY_PREFIX[chip.group(1)].key
    model = _MODEL_BY_ID.get(device_id.lower().removeprefix("0x"))
    if model is not None:
        return model.generation
    for pattern, key in _NAME_TOKENS:  # "Tesla K80" (nvidia-smi), "nvidia-tesla-k80" (GCE)
        if re.search(pattern, name, re.IGNORECASE):
            return key
    try:
        if int(device_id, 16) >= 0x1E00:
            return "turing"
    except ValueError:
        pass
    return UNKNOWN


def driver_row(generation_key: str) -> DriverRow:
    """The row for one generation; an unknown (old) card gets the proprietary row."""
    for row in DRIVER_ROWS:
        if generation_key in row.generations:
            return row
    return DRIVER_ROWS[1]


def choose_driver(generations: Iterable[str]) -> DriverRow:
    """The one driver for a host's GPUs: the row of its oldest generation.

    Clouds never mix generations in one VM; if a host did, the older card's constraint wins
    (R470 still drives newer cards up to Ampere; the open modules drive no pre-Turing card).
    """
    order = [g.key for g in GENERATIONS]
    keys = [g for g in generations if g in order] or [UNKNOWN]
    if UNKNOWN in keys:
        return driver_row(UNKNOWN)
    oldest = min(keys, key=order.index)
    return driver_row(oldest)


def branch_of(driver_version: str) -> int | None:
    """470 for "470.256.02"; None when the text is not a driver version."""
    match = re.match(r"\s*(\d{3})\.", driver_version)
    return int(match.group(1)) if match else None


def max_cuda_for_branch(branch: int) -> str | None:
    """Newest CUDA a driver branch runs, from `CUDA_BY_BRANCH`; None below the table."""
    best: str | None = None
    for first, cuda in CUDA_BY_BRANCH:
        if branch >= first:
            best = cuda
    return best


def max_cuda_for_driver(driver_version: str) -> str | None:
    """Newest CUDA a driver version ("535.129.03") runs."""
    branch = branch_of(driver_version)
    return None if branch is None else max_cuda_for_branch(branch)


def version_tuple(version: str) -> tuple[int, ...]:
    """(12, 4) for "12.4" or "12.4.1"; () for text without a leading number."""
    parts = re.findall(r"\d+", version.split("-")[0])
    return tuple(int(p) for p in parts[:2])


def cuda_newer(wanted: str, available: str) -> bool:
    """Whether CUDA `wanted` (major.minor) is newer than what `available` supports."""
    a, b = version_tuple(wanted), version_tuple(available)
    return bool(a) and bool(b) and a > b


def image_cuda_from_tag(image: str) -> str | None:
    """A CUDA version an image reference names in its tag ("...:12.4.1-base", "cuda12.1")."""
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return None
    match = re.search(r"cuda[-_]?(\d{2})\.?(\d)", tag, re.IGNORECASE)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    repo = image.rsplit(":", 1)[0]
    if repo.endswith("nvidia/cuda"):
        match = re.match(r"(\d{2})\.(\d+)", tag)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


# -- parsing what hosts print ------------------------------------------------------------


@dataclass(frozen=True)
class PciGpu:
    """One NVIDIA display/3D device: PCI slot, device id, the name lspci gives (or "")."""

    slot: str
    device_id: str
    name: str = ""

    @property
    def generation(self) -> str:
        return generation_of(self.device_id, self.name)


_LSPCI_LINE = re.compile(
    r"^(?P<slot>(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<cls>[^\[]*?)\s*\[(?P<cc>03[0-9a-fA-F]{2})\]:\s*"
    r"(?P<desc>.*?)\s*\[10de:(?P<dev>[0-9a-fA-F]{4})\]"
)


def parse_lspci(text: str) -> list[PciGpu]:
    """NVIDIA display/3D controllers in `lspci -nn` output (other lines are ignored).

    Class 03xx only: an A100/H100 host also lists NVSwitch bridges (class 0680) and audio
    functions that are not GPUs.
    """
    found = []
    for line in text.splitlines():
        match = _LSPCI_LINE.match(line.strip())
        if match:
            desc = match.group("desc").removeprefix("NVIDIA Corporation").strip()
            found.append(PciGpu(match.group("slot"), match.group("dev").lower(), desc))
    return found


def normalize_slot(slot: str) -> str:
    """ "0000:00:04.0" and "00:04.0" compare equal: drop a zero PCI domain, lower-case."""
    slot = slot.strip().lower()
    return slot[5:] if slot.startswith("0000:") else slot


@dataclass(frozen=True)
class SmiReport:
    """What `nvidia-smi`'s default table says: driver, CUDA it supports, GPU names."""

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[str, ...]

    def summary(self) -> str:
        """ "1x Tesla T4, driver 535.129.03, CUDA 12.2": the line the verify step shows."""
        names: dict[str, int] = {}
        for gpu in self.gpus:
            names[gpu] = names.get(gpu, 0) + 1
        cards = ", ".join(f"{n}x {name}" for name, n in names.items()) or "no GPU listed"
        return f"{cards}, driver {self.driver_version or '?'}, CUDA {self.cuda_version or '?'}"


_SMI_HEADER = re.compile(
    r"Driver Version:\s*(?P<driver>[0-9.]+)\s+CUDA Version:\s*(?P<cuda>[0-9.]+|N/A)"
)
# "|   0  Tesla K80           Off  | 00000000:00:04.0 Off |" (two name layouts over the years)
_SMI_GPU = re.compile(
    r"^\|\s+(?P<idx>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s+\|\s+"
    r"(?P<bus>[0-9A-Fa-f]{8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)"
)


def parse_nvidia_smi(text: str) -> SmiReport:
    """Parse nvidia-smi's default table output (R470 layout and the R535+ layout)."""
    header = _SMI_HEADER.search(text)
    driver = header.group("driver") if header else None
    cuda = header.group("cuda") if header and header.group("cuda") != "N/A" else None
    gpus = tuple(m.group("name") for m in map(_SMI_GPU.match, text.splitlines()) if m)
    return SmiReport(driver, cuda, gpus)


@dataclass(frozen=True)
class DriverDecision:
    """What the driver step will do for a host's GPUs, with the reason in words."""

    generations: tuple[str, ...]
    row: DriverRow

    def explain(self) -> str:
        labels = sorted({_BY_KEY[g].label if g in _BY_KEY else "unknown" for g in self.generations})
        return (
            f"{'/'.join(labels)} GPU -> R{self.row.branch} with {self.row.modules} kernel "
            f"modules (CUDA up to {self.row.max_cuda}): {self.row.why}"
        )


def decide(gpus: Sequence[PciGpu]) -> DriverDecision | None:
    """The driver decision for the NVIDIA GPUs a host has; None for a host without one."""
    if not gpus:
        return None
    generations = tuple(sorted({gpu.generation for gpu in gpus}))
    return DriverDecision(generations, choose_driver(generations))


def table_rows() -> list[dict[str, str]]:
    """The table `orchestrate gpus` prints: one row per generation, with its sources."""
    rows = []
    for gen in GENERATIONS:
        row = driver_row(gen.key)
        models = ", ".join(m.name for m in GPU_MODELS if m.generation == gen.key)
        rows.append(
            {
                "generation": gen.label,
                "chips": f"{gen.chip_prefix}xxx",
                "compute": gen.compute,
                "examples": models,
                "driver": f"R{row.branch}",
                "modules": row.modules,
                "ubuntu_packages": " | ".join(f"nvidia-headless-{f}" for f in row.flavours),
                "max_cuda": row.max_cuda,
                "why": row.why,
                "sources": " ".join(row.sources),
            }
        )
    return rows


#: SXM GPUs that come eight (or sixteen) to a board behind NVSwitch: a2-highgpu-8g,
#: a2-megagpu-16g, a2-ultragpu-8g, the 8-GPU a3 types, p4d/p4de, p5/p5e/p5en. Smaller shapes
#: of the same GPUs and 8-GPU PCIe shapes (g2-standard-96, g6.48xlarge) have no NVSwitch.
NVSWITCH_GPUS = frozenset(
    {
        "nvidia-tesla-a100",
        "nvidia-a100-80gb",
        "nvidia-h100-80gb",
        "nvidia-h100-mega-80gb",
        "nvidia-h200-141gb",
        "nvidia-b200",
    }
)


def needs_fabric_manager(gpu: str, count: int) -> bool:
    """Whether an 8+ GPU NVSwitch shape needs ``nvidia-fabricmanager``: without it
    nvidia-smi works but CUDA fails (error 802, "system not yet initialized").
    Source: https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/"""
    return gpu in NVSWITCH_GPUS and count >= 8
