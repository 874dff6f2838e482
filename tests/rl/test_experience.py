import pytest
import torch

from koda.errors import KodaError
from koda.rl.experience import Experience


def _record(**changes):
    B, T = 3, 5
    mask = torch.ones(B, T, dtype=torch.bool)
    action = mask.clone()
    action[:, :2] = False
    fields = dict(sequences=torch.randint(0, 9, (B, T)), attention_mask=mask, action_mask=action,
                  old_logprobs=torch.randn(B, T), values=torch.randn(B, T), group=torch.tensor([0, 0, 1]))
    fields.update(changes)
    return Experience(**fields)


def test_valid_record_and_select():
    exp = _record()
    sub = exp.select(torch.tensor([2, 0]))
    assert sub.batch_size == 2 and torch.equal(sub.values, exp.values[[2, 0]])
    assert torch.equal(sub.group, torch.tensor([1, 0])) and sub.rewards is None


@pytest.mark.parametrize("changes, message", [
    ({"values": torch.randn(3, 4)}, r"experience.values has shape \(3, 4\), expected \(3, 5\)"),
    ({"group": torch.tensor([0, 1])}, r"experience.group has shape \(2,\), expected \(3,\)"),
    ({"sequences": torch.zeros(3, 5)}, "long token ids"),
    ({"action_mask": torch.ones(3, 5)}, "action_mask must be bool"),
    ({"old_logprobs": torch.zeros(3, 5, dtype=torch.long)}, "old_logprobs must be a float"),
])
def test_bad_fields_name_themselves(changes, message):
    with pytest.raises(KodaError, match=message):
        _record(**changes)


def test_action_on_padding_is_refused():
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 4] = False
    with pytest.raises(KodaError, match="padding"):
        _record(attention_mask=mask, action_mask=torch.ones(3, 5, dtype=torch.bool))
