"""The operator API: statistics, a person's records (audited), splits, the review of
"possible" pairs and of ambiguous opt-outs. Every data operation on a person is written to the
append-only operator log (who, what, which person) beside the request audit log."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from kiban_common.security import ApiError, Principal, require_scope
from kiban_common.service import ServiceRuntime, current_runtime
from kiban_linkage.context import REVIEW_SUBJECT, Linkage
from kiban_linkage.domain.linked import record_linked
from kiban_linkage.domain.persons import new_person_key, survivor
from kiban_linkage.optouts import apply_optout, subject_digests
from kiban_linkage.replica import hold
from kiban_linkage.store import vault

router = APIRouter(prefix="/v1", tags=["linkage"])

Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]
Operator = Annotated[Principal, Depends(require_scope("admin"))]


class Stats(BaseModel):
    persons: int
    records: int
    links: int = Field(description="records joined to a person that already had one")
    blocked: int = Field(description="persons under an opt-out")
    block_entries: int = Field(description="extension: opt-out subjects kept as block entries")
    possible_open: int = Field(description="extension: possible pairs awaiting review")
    optout_reviews_open: int = Field(description="extension: ambiguous opt-outs awaiting review")
    model_records: int = Field(description="extension: vault size the model was fitted on")


class VaultRecordOut(BaseModel):
    record_id: int
    institution_code: str
    identity: dict[str, Any]


class PersonOut(BaseModel):
    person_key: str
    pseudonym: str
    blocks: list[dict[str, Any]]
    records: list[VaultRecordOut]


class SplitIn(BaseModel):
    record_ids: list[int] = Field(min_length=1)


class SplitOut(BaseModel):
    person_key: str
    pseudonym: str
    moved: int


class PossibleLinkOut(BaseModel):
    id: int
    record_id: int
    other_record_id: int
    person: str
    other_person: str
    probability: float
    status: str


class DecisionIn(BaseModel):
    decision: Literal["link", "distinct"]


class OptoutReviewOut(BaseModel):
    optout_id: str
    action: str
    scope: str
    institution_code: str | None
    candidates: list[dict[str, Any]]
    status: str


class ResolveIn(BaseModel):
    persons: list[str] = Field(
        description="the person keys the subject is (empty: nobody; kept as a block entry)"
    )


def _ctx(runtime: ServiceRuntime) -> Linkage:
    ctx: Linkage = runtime.context
    return ctx


@router.get("/stats", response_model=Stats, summary="persons, records, links, blocked")
async def stats(runtime: Runtime, _: Operator) -> Stats:
    async with runtime.transaction() as tx:
        counts = await vault.stats(await tx.session.connection())
    return Stats(**counts, model_records=_ctx(runtime).model_records)


@router.get(
    "/persons/{key}",
    response_model=PersonOut,
    summary="a person (by person key or pseudonym) with their vault records (audited)",
    responses={404: {"description": "no such person"}},
)
async def get_person(key: str, runtime: Runtime, principal: Operator) -> PersonOut:
    ctx = _ctx(runtime)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        found = await vault.person(conn, key)
        if found is None:
            raise ApiError(404, "person_not_found", "no person has this key")
        person_key = found["person_key"]
        rows = await vault.person_records(conn, person_key)
        blocks = await vault.person_blocks_of(conn, person_key)
        await vault.log_operator(
            conn,
            principal=principal.subject,
            action="view_person",
            person_key=person_key,
            detail={"records": [r.id for r in rows]},
            at=ctx.clock(),
        )
    return PersonOut(
        person_key=person_key,
        pseudonym=found["pseudonym"],
        blocks=[
            {
                "institution_code": b["institution_code"] or None,
                "optout_id": b["optout_id"],
                "action": b["action"],
                "blocked_at": b["blocked_at"].isoformat(),
            }
            for b in blocks
        ],
        records=[
            VaultRecordOut(
                record_id=r.id,
                institution_code=r.institution_code,
                identity=ctx.open_identity(r.identity),
            )
            for r in rows
        ],
    )


@router.post(
    "/persons/{key}/split",
    response_model=SplitOut,
    status_code=201,
    summary="extension: move some of a person's records to a new person (audited)",
    responses={404: {"description": "no such person"}, 422: {"description": "bad record ids"}},
)
async def split_person(key: str, body: SplitIn, runtime: Runtime, principal: Operator) -> SplitOut:
    ctx = _ctx(runtime)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        await hold(ctx, tx)  # the vault lock: writers of the vault take turns
        found = await vault.person(conn, key)
        if found is None:
            raise ApiError(404, "person_not_found", "no person has this key")
        person_key = found["person_key"]
        own = {r.id for r in await vault.person_records(conn, person_key)}
        moving = sorted(set(body.record_ids))
        if not set(moving) <= own:
            raise ApiError(422, "invalid_record_ids", "record_ids: not all belong to this person")
        if set(moving) == own:
            raise ApiError(422, "invalid_record_ids", "record_ids: cannot move every record")
        new_key = new_person_key()
        now = ctx.clock()
        await vault.add_person(conn, new_key, ctx.pseudonym(new_key), now)
        await vault.move_records(conn, moving, new_key)
        for block in await vault.person_blocks_of(conn, person_key):
            # A split never lifts an opt-out: the new person inherits the blocks.
            await vault.block_person(
                conn,
                new_key,
                institution_code=block["institution_code"] or None,
                optout_id=block["optout_id"],
                action=block["action"],
                at=now,
            )
        await vault.log_operator(
            conn,
            principal=principal.subject,
            action="split_person",
            person_key=person_key,
            detail={"records": moving, "into": new_key},
            at=now,
        )
    return SplitOut(person_key=new_key, pseudonym=ctx.pseudonym(new_key), moved=len(moving))


@router.get(
    "/possible-links",
    response_model=list[PossibleLinkOut],
    summary="extension: pairs scored in the possible band (never linked automatically)",
)
async def list_possible_links(
    runtime: Runtime,
    _: Operator,
    status: Annotated[Literal["open", "linked", "distinct"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PossibleLinkOut]:
    async with runtime.transaction() as tx:
        rows = await vault.possible_links_page(
            await tx.session.connection(), status=status, limit=limit
        )
    return [PossibleLinkOut(**r) for r in rows]


@router.post(
    "/possible-links/{link_id}/decision",
    response_model=PossibleLinkOut,
    summary="extension: an operator links a possible pair (the persons merge) or marks it "
    "distinct (audited)",
    responses={404: {"description": "no such pair"}, 409: {"description": "already decided"}},
)
async def decide_possible_link(
    link_id: int, body: DecisionIn, runtime: Runtime, principal: Operator
) -> PossibleLinkOut:
    ctx = _ctx(runtime)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        await hold(ctx, tx)  # the vault lock: writers of the vault take turns
        link = await vault.possible_link(conn, link_id)
        if link is None:
            raise ApiError(404, "pair_not_found", "no possible pair has this id")
        if link["status"] != "open":
            raise ApiError(409, "already_decided", "this pair was already decided")
        pair = await vault.record_ids(conn, [link["record_id"], link["other_record_id"]])
        if len(pair) != 2:
            raise ApiError(409, "record_gone", "a record of this pair was deleted")
        now = ctx.clock()
        persons = sorted({r.person_key for r in pair})
        if body.decision == "link" and len(persons) == 2:
            for p in persons:
                if await vault.person_blocks_of(conn, p):
                    raise ApiError(409, "person_blocked", "a person of this pair opted out")
            counts = await vault.record_counts(conn, persons)
            into = survivor(counts.items())
            absorbed = [p for p in persons if p != into]
            await vault.merge_persons(conn, into, absorbed)
            # Tell downstream, as an automatic merge does: no resources, `merged_from` set.
            kept = next(r for r in pair if r.person_key == into)
            pseudonym = ctx.pseudonym(into)
            await tx.emit(
                record_linked(
                    pseudonym=pseudonym,
                    institution_code=kept.institution_code,
                    submission_id=f"merge-{link_id}",
                    at=now,
                    identity=ctx.open_identity(kept.identity),
                    resources=[],
                    merged_from=[ctx.pseudonym(p) for p in absorbed],
                )
            )
        status = "linked" if body.decision == "link" else "distinct"
        await vault.decide_possible_link(conn, link_id, status=status, by=principal.subject, at=now)
        await vault.log_operator(
            conn,
            principal=principal.subject,
            action=f"possible_link_{status}",
            person_key=persons[0],
            detail={"pair": link_id, "persons": persons},
            at=now,
        )
        link["status"] = status
        rows = {r.id: r.person_key for r in await vault.record_ids(conn, [r.id for r in pair])}
    return PossibleLinkOut(
        id=link_id,
        record_id=link["record_id"],
        other_record_id=link["other_record_id"],
        person=rows[link["record_id"]],
        other_person=rows[link["other_record_id"]],
        probability=link["probability"],
        status=status,
    )


@router.get(
    "/optout-reviews",
    response_model=list[OptoutReviewOut],
    summary="extension: opt-outs whose match was ambiguous (not acknowledged until resolved)",
)
async def list_optout_reviews(
    runtime: Runtime,
    _: Operator,
    status: Annotated[Literal["open", "resolved"], Query()] = "open",
) -> list[OptoutReviewOut]:
    async with runtime.transaction() as tx:
        rows = await vault.optout_reviews_page(await tx.session.connection(), status=status)
    return [OptoutReviewOut(**r) for r in rows]


@router.post(
    "/optout-reviews/{optout_id}/resolve",
    response_model=OptoutReviewOut,
    summary="extension: an operator names the persons an ambiguous opt-out is about; it is "
    "then applied and acknowledged (audited)",
    responses={
        404: {"description": "no such review or person"},
        409: {"description": "already resolved"},
    },
)
async def resolve_optout_review(
    optout_id: str, body: ResolveIn, runtime: Runtime, principal: Operator
) -> OptoutReviewOut:
    ctx = _ctx(runtime)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        await hold(ctx, tx)  # the vault lock: writers of the vault take turns
        review = await vault.optout_review(conn, optout_id)
        if review is None:
            raise ApiError(404, "review_not_found", "no opt-out review has this id")
        if review["status"] != "open":
            raise ApiError(409, "already_resolved", "this opt-out review was already resolved")
        persons: list[str] = []
        for key in dict.fromkeys(body.persons):
            found = await vault.person(conn, key)
            if found is None:
                raise ApiError(404, "person_not_found", "persons: a key names no person")
            persons.append(found["person_key"])
        now = ctx.clock()
        if not await vault.resolve_optout_review(conn, optout_id, by=principal.subject, at=now):
            raise ApiError(409, "already_resolved", "this opt-out review was already resolved")
        subject = ctx.cipher.decrypt_json(review["subject"], context=REVIEW_SUBJECT)
        await apply_optout(
            ctx,
            tx,
            conn,
            review,
            subject=subject,
            digests=subject_digests(ctx, subject),
            persons=persons,
        )
        await vault.log_operator(
            conn,
            principal=principal.subject,
            action="resolve_optout",
            person_key=persons[0] if persons else None,
            detail={"optout_id": optout_id, "persons": persons},
            at=now,
        )
        review["status"] = "resolved"
    return OptoutReviewOut(**review)
