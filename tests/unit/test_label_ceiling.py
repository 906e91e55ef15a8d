"""Label-ceiling maths on hand-computed vote tables."""
import numpy as np
import pytest

from smile2pay_tools.bench.label_ceiling import decisions_vs_rest, lfw_agreement, one_annotator, vote_groups


def _v(**kw):
    cols = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "nf"]
    r = np.zeros(10, int)
    for k, v in kw.items():
        r[cols.index(k)] = v
    return r


def test_unanimous_faces_give_a_perfect_annotator():
    V = np.stack([_v(happiness=10), _v(neutral=10), _v(anger=10)])
    r = one_annotator(V)
    assert r["tpr"] == 1.0 and r["fpr"] == 0.0
    assert r["smiles_weight"] == 1.0 and r["others_weight"] == 2.0


def test_split_face_by_hand():
    # 6 happiness, 4 neutral. Dropping a happiness vote (p 0.6): rest 5 h / 4 n -> smile; annotator said smile.
    # Dropping a neutral vote (p 0.4): rest 6 h / 3 n -> smile; annotator said neutral.
    r = one_annotator(np.stack([_v(happiness=6, neutral=4)]))
    assert r["tpr"] == pytest.approx(0.6) and r["fpr"] is None
    # 5 happiness, 5 neutral: dropping a happiness vote (0.5) -> 4 h / 5 n: truth neutral, annotator said smile;
    # dropping a neutral (0.5) -> 5 h / 4 n: truth smile, annotator said neutral.
    r = one_annotator(np.stack([_v(happiness=5, neutral=5)]))
    assert r["tpr"] == 0.0 and r["fpr"] == 1.0


def test_decisions_against_the_same_truth():
    V = np.stack([_v(happiness=6, neutral=4), _v(neutral=9, happiness=1)])
    r = decisions_vs_rest(V, np.array([True, True]))
    assert r["tpr"] == 1.0 and r["fpr"] == 1.0
    r = decisions_vs_rest(V, np.array([True, False]))
    assert r["tpr"] == 1.0 and r["fpr"] == 0.0
    with pytest.raises(ValueError):
        decisions_vs_rest(V, np.array([True]))


def test_lfw_agreement_counts():
    labels = ["happiness", "happiness", "anger", "surprise", "neutral", ""]
    smile = [1, 0, 1, 0, 0, 1]
    r = lfw_agreement(labels, smile)
    assert r["images_with_both"] == 5
    assert r["happiness_called_neutral"] == {"n": 1, "of": 2, "rate": 0.5}
    assert r["other_called_smile"] == {"n": 1, "of": 2, "rate": 0.5}


def test_vote_groups_by_hand():
    V = np.stack([_v(happiness=9, neutral=1),            # clear smile
                  _v(happiness=6, neutral=4),            # contested smile
                  _v(neutral=7, happiness=3),            # other (neutral majority) with happiness votes
                  _v(anger=6, sadness=4),                # clear other
                  _v(neutral=9, surprise=1),             # clear neutral
                  _v(neutral=5, surprise=5),             # neither clear neutral nor clear other (tie -> neutral)
                  _v(unknown=8, nf=2)])                  # no emotion vote: only the majority's "others"
    g = {k.split(" (")[0]: np.flatnonzero(m).tolist() for k, m in vote_groups(V).items()}
    assert g["smiles"] == [0, 1]
    assert g["others"] == [2, 3, 4, 5, 6]
    assert g["clear smiles"] == [0]
    assert g["contested smiles"] == [1]
    assert g["others with some happiness votes"] == [2]
    assert g["clear others"] == [3]
    assert g["clear neutral"] == [4]
    # the threshold is the caller's: at 60 % the 6 / 4 face is clear too
    g6 = {k.split(" (")[0]: np.flatnonzero(m).tolist() for k, m in vote_groups(V, clear=0.6).items()}
    assert g6["clear smiles"] == [0, 1] and g6["contested smiles"] == []
