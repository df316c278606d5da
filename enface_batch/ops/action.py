"""/action: search every face in the group's person lists and create persons where the source's rules allow.

Parameters left out of a request come from the source, then its group, then the defaults (the seed's "most
common misunderstanding" paragraph). A person created from one face is searchable by the next face at once,
also within one batch; faces of one photo never match a person another face of that photo just created.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from ..analyze import Analyzer, Face, ImageResult
from ..imaging import jpeg_bytes
from ..lake.protocols import ReadLake
from ..lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_SOURCE_ID, TABLES
from ..lake.store import Lake, now
from ..scoring import Calibration, calibration_for
from . import validate
from .catalog import get_group, get_source, require_lists
from .errors import BadRequest
from .identity import FaceIdSet, face_id, face_row, new_ids
from .quality import FaceQuality
from .search import CHUNK_DEPTH, PersonSearch, Searcher
from .shapes import error_image, face_json, spent


@dataclass
class Rules:
    source_id: str
    group_id: str
    person_list_search: list[str]
    new_person_threshold: str
    threshold_score: float | None  # None: never create
    new_person_square_min: int
    new_person_yaw_max: int
    person_list_add: list[str]
    feature_check: list[str]
    origin: dict[str, str] = field(default_factory=dict)  # parameter -> request | source | group | default

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def resolve_rules(
    lake: ReadLake,
    calibration: Calibration,
    *,
    group_id: str | None = None,
    source_id: str | None = None,
    person_list_search: Iterable[str] | None = None,
    new_person_threshold: str | None = None,
    new_person_square_min: int | str | None = None,
    new_person_yaw_max: int | str | None = None,
    person_list_add: Iterable[str] | str | None = None,
    feature_check: Iterable[str] | str | None = None,
) -> Rules:
    """The effective rules of one action: request values first, then the source's, then its group's."""
    if source_id:
        source = get_source(lake, source_id)
        group = get_group(lake, source["group_id"])
        if group_id and validate.uuid_str(group_id, "group_id") != group["group_id"]:
            raise BadRequest(f"source {source['source_id']} belongs to group {group['group_id']}, not {group_id}")
    else:
        group = get_group(lake, group_id or DEFAULT_GROUP_ID)
        source = get_source(lake, DEFAULT_SOURCE_ID)
    origin: dict[str, str] = {}

    def pick(param: str, given: object, from_source: object, check) -> object:
        if given is not None and given != []:
            origin[param] = "request"
            return check(given)
        origin[param] = "source" if source_id else "default"
        return from_source

    threshold = pick("new_person_threshold", new_person_threshold, source["new_person_threshold"], validate.threshold)
    square = pick("new_person_square_min", new_person_square_min, source["new_person_square_min"], validate.square)
    yaw = pick("new_person_yaw_max", new_person_yaw_max, source["new_person_angle_max"], validate.angle)
    add = pick(
        "person_list_add",
        person_list_add,
        list(source["person_list_add"]),
        lambda v: validate.uuid_list(v, "person_list_add"),
    )
    feats = pick("feature_check", feature_check, list(source["feature_check"]), validate.features)
    if person_list_search is not None and list(person_list_search):
        search, origin["person_list_search"] = validate.uuid_list(person_list_search, "person_list_search"), "request"
    elif group["person_list_search"]:
        search, origin["person_list_search"] = list(group["person_list_search"]), "group"
    else:
        search, origin["person_list_search"] = [DEFAULT_LIST_ID], "default"
    require_lists(lake, search, "person_list_search")
    if threshold != "never":  # with "never" the add lists are ignored, as the seed says
        require_lists(lake, add, "person_list_add")
    return Rules(
        source_id=source["source_id"],
        group_id=group["group_id"],
        person_list_search=search,
        new_person_threshold=threshold,
        threshold_score=calibration.threshold(threshold),
        new_person_square_min=int(square),
        new_person_yaw_max=int(yaw),
        person_list_add=add,
        feature_check=feats,
        origin=origin,
    )


def thumb_jpeg(face: Face) -> bytes:
    """The JPEG of a face's aligned crop: encoded by the worker that analysed it, else here."""
    return face.thumb_jpeg if face.thumb_jpeg is not None else jpeg_bytes(face.thumb)


def person_row(
    face: Face,
    res: ImageResult,
    *,
    list_id: str,
    source_id: str | None,
    group_id: str | None,
    drop_image: bool,
    model: str,
    action_id: str | None = None,
    fields: list[str] | None = None,
    person_id: str | None = None,
) -> dict:
    t = now()
    return {
        "person_id": person_id or str(uuid.uuid4()),
        "list_id": list_id,
        "created": t,
        "updated": t,
        "source_id": source_id,
        "group_id": group_id,
        "status": "init",
        "fields": fields or [],
        "features": json.dumps(face.features, sort_keys=True),
        "yaw": face.yaw,
        "square": face.square,
        "bbox": face.bbox,
        "embedding": np.asarray(face.embedding, np.float32),
        # drop_image: only the unpersonalised embedding is kept, as the seed says.
        "image": None if drop_image else face.crop,
        "thumb": None if drop_image else thumb_jpeg(face),
        "image_uri": None if drop_image else res.uri,
        "image_sha256": res.sha256,
        "face_index": face.index,
        "action_id": action_id,
        "model": model,
    }


class ActionEngine:
    """Runs the action semantics over analysed images and stages the rows; commit() writes them.

    Besides the seed's matches and auto-enrolment, every face is given its person in each list it was searched
    or enrolled in (a `person_faces` row): the best person when the face's score against that person's template
    reaches the assignment threshold (the rules' new_person_threshold; no_match when that is never), or the
    person the face created. Faces of one photo are never given the same person (cannot-link). With
    ``assign=False`` (the endpoint's read-only /action) nothing is staged but the answer.
    """

    def __init__(
        self, lake: Lake, analyzer: Analyzer, searcher: PersonSearch | None = None, *, assign: bool = True
    ) -> None:
        if searcher is not None and assign and not isinstance(searcher, Searcher):
            raise TypeError("a read-only PersonSearch cannot assign faces: pass assign=False")
        self.lake, self.analyzer = lake, analyzer
        self.model = analyzer.pack.version
        self.calibration = calibration_for(analyzer.pack.models["embedder"])
        self.searcher = searcher or Searcher(lake, analyzer.pack.embedder.dim)
        self.assign = assign
        self.quality = FaceQuality.from_settings()
        self.persons: list[dict] = []
        self.faces: list[dict] = []
        self._known: FaceIdSet | None = None  # face ids already in person_faces
        self.actions: list[dict] = []
        self._sealed: dict[str, list[pa.Table]] = {"persons": [], "person_faces": [], "actions": []}

    def _matches(self, hits: list[tuple[str, str, float]]) -> list[dict]:
        return [
            {"person_id": p, "list_id": lst, "score": round(self.calibration.score_one(s), 2)} for p, lst, s in hits
        ]

    def process(
        self,
        res: ImageResult,
        rules: Rules,
        *,
        results: int = 1,
        drop_image: bool = False,
        run_id: str | None = None,
    ) -> list[dict]:
        """Search, assign and enrol every face of one analysed image; returns one outcome per face."""
        return self.process_chunk([res], rules, results=results, drop_image=drop_image, run_id=run_id, batched=False)[0]

    def process_chunk(
        self,
        images: list[ImageResult],
        rules: Rules,
        *,
        results: int = 1,
        drop_image: bool = False,
        run_id: str | None = None,
        batched: bool = True,
    ) -> list[list[dict]]:
        """Search, assign and enrol every face of these images, in order; per image, one outcome per face.

        batched: one FAISS search per list for all the faces (ChunkSearch), with the same answers as
        searching face after face: a person created or moved by a face is seen at once by the next ones.
        """
        assign_at = rules.threshold_score if rules.threshold_score is not None else self.calibration.no_match
        lists = list(rules.person_list_search)
        if rules.threshold_score is not None:
            lists += [x for x in rules.person_list_add if x not in lists]
        faces = [(res, face) for res in images for face in res.faces]
        if not faces:
            return [[] for _ in images]
        decisions = self._decisions(faces, rules)
        rules_json = rules.to_json()
        chunk = None
        if batched and isinstance(self.searcher, Searcher):
            chunk = self.searcher.chunk(lists, np.stack([f.embedding for _, f in faces]), results + CHUNK_DEPTH)

        def search(list_ids: list[str], n: int, q: np.ndarray, k: int, exclude: set[str]) -> list:
            if chunk is not None:
                return chunk.search(list_ids, n, k, exclude=exclude)
            return self.searcher.search(list_ids, q, k, exclude=exclude)[0]

        out: list[list[dict]] = []
        n = 0
        action_ids = new_ids(len(faces))
        known = self._known_faces() if self.assign else set()
        score_one = self.calibration.score_one
        try:
            for res in images:
                created_here: set[str] = set()
                taken: set[str] = set()  # persons given to a face of this photo: another face of it is someone else
                outcomes = []
                t = now()
                for face in res.faces:
                    t0 = time.perf_counter()
                    action_id = action_ids[n]
                    q = face.embedding[None, :]
                    matches = self._matches(search(rules.person_list_search, n, q, results, created_here))
                    created: list[dict] = []
                    decision = decisions[n]
                    common = {"rules": rules, "drop_image": drop_image, "run_id": run_id, "action_id": action_id}
                    for list_id in lists if (self.assign or decision == "create") else []:
                        fid = face_id(list_id, res.sha256, face.index) if self.assign else None
                        if fid in known:
                            continue  # this face already has its person in the list
                        best = search([list_id], n, q, 1, taken)
                        score = score_one(best[0][2]) if best else None
                        if best and score >= assign_at:
                            if self.assign:
                                self._stage_face(
                                    face, res, list_id, best[0][0], "matched", score=score, fid=fid, **common
                                )
                                self.searcher.assigned(list_id, best[0][0], face.embedding)
                                taken.add(best[0][0])
                        elif decision == "create" and list_id in rules.person_list_add:
                            row = person_row(
                                face,
                                res,
                                list_id=list_id,
                                source_id=rules.source_id,
                                group_id=rules.group_id,
                                drop_image=drop_image,
                                model=self.model,
                                action_id=action_id,
                            )
                            self.persons.append(row)
                            self._stage_face(
                                face, res, list_id, row["person_id"], "created", thumb=row["thumb"], fid=fid, **common
                            )
                            self.searcher.added(list_id, [row["person_id"]], q)
                            created_here.add(row["person_id"])
                            taken.add(row["person_id"])
                            created.append({"person_id": row["person_id"], "list_id": list_id})
                    if decision == "create":
                        decision = "created" if created else "matched"
                    self.actions.append(
                        {
                            "action_id": action_id,
                            "run_id": run_id,
                            "created": t,
                            "source_id": rules.source_id,
                            "group_id": rules.group_id,
                            "image_sha256": res.sha256,
                            "image_uri": None if drop_image else res.uri,
                            "face_index": face.index,
                            "bbox": face.bbox,
                            "square": face.square,
                            "yaw": face.yaw,
                            "matches": matches,
                            "persons_created": [c["person_id"] for c in created],
                            "decision": decision,
                            "rules": rules_json,
                            "spent_ms": (time.perf_counter() - t0) * 1000,
                        }
                    )
                    outcomes.append({"matches": matches, "persons_created": created, "decision": decision})
                    n += 1
                out.append(outcomes)
        finally:
            if chunk is not None:
                self.searcher.end_chunk()
        return out

    def _decisions(self, faces: list[tuple[ImageResult, Face]], rules: Rules) -> list[str]:
        """The enrolment decision of each face; the quality check runs on all of them at once."""
        decisions = [self._decision(f, rules) for _, f in faces]
        ask = [i for i, d in enumerate(decisions) if d == "create"]
        if ask:
            ok = self.quality.usable_many(
                [faces[i][1] for i in ask], [(faces[i][0].width, faces[i][0].height) for i in ask]
            )
            for i, good in zip(ask, ok, strict=True):
                if not good:
                    decisions[i] = "low_quality"
        return decisions

    def _stage_face(
        self,
        face: Face,
        res: ImageResult,
        list_id: str,
        person_id: str,
        how: str,
        *,
        rules: Rules,
        drop_image: bool,
        run_id: str | None,
        action_id: str,
        score: float | None = None,
        thumb: bytes | None = None,
        fid: str | None = None,
    ) -> None:
        """A person_faces row for this face, staged with the rest of the chunk."""
        if thumb is None and not drop_image:
            thumb = thumb_jpeg(face)
        row = face_row(
            person_id=person_id,
            list_id=list_id,
            embedding=face.embedding,
            image_sha256=res.sha256,
            face_index=face.index,
            how=how,
            image_uri=None if drop_image else res.uri,
            thumb=thumb,
            score=None if score is None else round(score, 2),
            source_id=rules.source_id,
            run_id=run_id,
            action_id=action_id,
            known_face_id=fid,
        )
        self.faces.append(row)
        self._known_faces().add(row["face_id"])

    @staticmethod
    def _decision(face: Face, rules: Rules, res: ImageResult | None = None, quality: FaceQuality | None = None) -> str:
        if rules.threshold_score is None:
            return "never"  # and the square, yaw and list rules are ignored, as the seed says
        if not rules.person_list_add:
            return "no_add_list"
        if face.square < rules.new_person_square_min:
            return "below_square"
        if abs(face.yaw) > rules.new_person_yaw_max:
            return "above_yaw"
        if res is not None and quality is not None and not quality.usable(face, res.width, res.height):
            return "low_quality"
        return "create"

    def seal(self, min_rows: int = 0) -> None:
        """Turn the staged rows of each table that holds at least min_rows into an Arrow table now (a scan
        writer, between chunks): thousands of staged dict rows, with their lists, made every garbage collection
        of the writer's process scan them (~15 % of its time at 8,000 faces between commits); Arrow columns
        are not Python objects."""
        for name, attr in (("persons", "persons"), ("person_faces", "faces"), ("actions", "actions")):
            rows = getattr(self, attr)
            if rows and len(rows) >= min_rows:
                self._sealed[name].append(pa.Table.from_pylist(rows, TABLES[name]))
                setattr(self, attr, [])

    def _staged(self, name: str) -> pa.Table | None:
        """Everything staged for a table, as one Arrow table (None: nothing), and no longer staged."""
        self.seal()
        parts, self._sealed[name] = self._sealed[name], []
        return pa.concat_tables(parts) if parts else None

    def commit_persons(self) -> None:
        """Persons, then the face rows that point at them; the index is stamped with the face rows' version."""
        persons = self._staged("persons")
        if persons is not None:
            self.lake.append("persons", persons)
        faces = self._staged("person_faces")
        if faces is not None:
            self.searcher.committed(self._write_faces(faces))

    def _write_faces(self, rows: pa.Table) -> int:
        return self.lake.append("person_faces", rows)

    def _known_faces(self) -> FaceIdSet:
        """Face ids person_faces holds: a face that already has a person in a list (its photo was enrolled, or
        scanned by another source) keeps it; a scan does not give it a second one or count it twice."""
        if self._known is None:
            self._known = FaceIdSet(self.lake.read("person_faces", columns=["face_id"])["face_id"])
        return self._known

    def commit_actions(self) -> None:
        actions = self._staged("actions")
        if actions is not None:
            self.lake.append("actions", actions)

    def commit(self) -> None:
        """Persons and their faces first, then the actions that reference them: each one atomic Delta commit."""
        self.commit_persons()
        self.commit_actions()


def action(
    lake: Lake,
    analyzer: Analyzer,
    uris: Iterable[str],
    *,
    results: int = 1,
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
    drop_image: bool = False,
    **rule_params,
) -> dict:
    """The seed's /action over one or more images: per image, per face, matches and persons created."""
    t0 = time.perf_counter()
    k = validate.results(results)
    engine = ActionEngine(lake, analyzer)
    rules = resolve_rules(lake, engine.calibration, **rule_params)
    run_id = str(uuid.uuid4())
    shape = {"bbox": bbox, "bbox_pro": bbox_pro, "thumb": thumb}
    out = [
        search_image(engine, res, rules, results=k, drop_image=drop_image, run_id=run_id, **shape)
        for res in analyzer.analyze_uris(list(uris), features=rules.feature_check, multi=multi)
    ]
    engine.commit()
    return {"status": "ok", "results": out, "spent": spent(t0)}


def search_image(
    engine: ActionEngine,
    res: ImageResult,
    rules: Rules,
    *,
    results: int,
    drop_image: bool,
    run_id: str | None = None,
    **shape: bool,
) -> dict:
    """One image of an /action response: per face, its matches and the persons it created (or its error).
    The CLI's action and the endpoint's search-only /action both answer with it."""
    if res.error:
        return error_image(res)
    outcomes = engine.process(res, rules, results=results, drop_image=drop_image, run_id=run_id)
    faces = [{**face_json(face, **shape), **o} for face, o in zip(res.faces, outcomes, strict=True)]
    return {"image": res.uri, "status": res.status, "faces_total": len(faces), "faces": faces}
