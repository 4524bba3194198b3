"""Keyboard as an intervention source: a terminal reader thread feeding key presses to KeyboardSource."""

import os
import queue
import time

import pytest
import torch

from torchrl_serl.envs.input_devices.keyboard import KeyboardSource, TerminalKeyReader


def test_terminal_key_reader_feeds_keyboard_source():
    keys = queue.Queue()
    read_fd, write_fd = os.pipe()
    with TerminalKeyReader(keys, fd=read_fd):
        os.write(write_fd, b"wr")
        deadline = time.time() + 5
        while keys.qsize() < 2 and time.time() < deadline:
            time.sleep(0.01)
    os.close(write_fd)
    os.close(read_fd)
    torch.testing.assert_close(KeyboardSource(keys).poll(), torch.tensor([1.0, 0, 1, 0]))


def test_key_map_vectors_must_have_one_length():
    with pytest.raises(ValueError, match="one length"):
        KeyboardSource(queue.Queue(), key_map={"w": (1, 0), "s": (1, 0, 0)})
