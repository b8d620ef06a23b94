"""Fixtures shared by every test folder."""

import pytest
import torch


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (train, test) :class:`~dpap.training.Split` s: 360 test
    images ``[1, 8, 8]`` in [0, 1], stratified, the same split everywhere."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from dpap.training import Split

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return Split(xtr, ytr), Split(xte, yte)
