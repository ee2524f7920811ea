"""Test-support code shipped with cnngpu (the CUDA emulation tier lives in ``cnngpu.testing.cudaemu``)."""
