"""Re-exports :mod:`whisper_ft.trainkit.dist` (the process helpers moved there; both recipes use them)."""

from whisper_ft.trainkit.dist import is_main_process as is_main_process
from whisper_ft.trainkit.dist import local_rank as local_rank
from whisper_ft.trainkit.dist import local_world_size as local_world_size
from whisper_ft.trainkit.dist import log_main as log_main
from whisper_ft.trainkit.dist import rank as rank
from whisper_ft.trainkit.dist import world_size as world_size
