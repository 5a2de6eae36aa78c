"""The server's heap over a long run: fewer malloc arenas, and freed memory handed back after each request.

glibc gives each thread that allocates its own arena (up to 8 per core), and Gradio runs every request in a worker
thread of its pool: each request's tensors (batches of x_t, activations, PNG buffers) are freed into whichever
arena that thread had, and the holes left between long-lived blocks are kept, not returned. A 30-minute soak of
the app (`python -m bench soak`, README Reliability) saw the resident memory rise by about 5 MB a minute that way.
Two arenas and a `malloc_trim` after each request keep it flat. Elsewhere than glibc both are no-ops.
"""

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # mallopt's parameter number (glibc malloc.h)
ARENAS = 2  # the request threads share two arenas: one may be trimmed while the other is in use


@functools.cache
def libc():
    """glibc, or None where the C library has no mallopt/malloc_trim (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name)
        library.mallopt, library.malloc_trim  # noqa: B018 (both must exist)
    except (OSError, AttributeError, TypeError):
        return None
    return library


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas from now on (call before the worker threads start); False where unsupported."""
    if not isinstance(arenas, int) or arenas < 1:
        raise ValueError(f"arenas must be a positive int, got {arenas!r}")
    library = libc()
    return bool(library and library.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the freed memory at the top and in the holes of every arena back to the OS; True if some was."""
    library = libc()
    return bool(library and library.malloc_trim(0))
