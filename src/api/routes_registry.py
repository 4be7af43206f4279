"""Who takes part: complexes, households, residents, merchants and the accrual policy.

The operator registers complexes, households and merchants, pays merchants out and
sets the accrual policy. Residents enrol themselves; a coordinator enrols residents
of households in their complex (recorded as acting on the resident's behalf); the
platform enrols the residents who sign up in the app. A coordinator or the operator
records a move-out.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path

from api.auth import Role
from api.models import (
    AccrualPolicyRequest,
    AccrualPolicySet,
    ComplexRegistered,
    EnrolResidentRequest,
    HouseholdRegistered,
    MerchantPaidOut,
    MerchantRegistered,
    PayoutRequest,
    RegisterComplexRequest,
    RegisterHouseholdRequest,
    RegisterMerchantRequest,
    ResidentEnrolled,
    ResidentMovedOut,
)
from api.problems import problem_responses
from api.routes_common import Write, in_complex, writer
from ledger import commands as c
from ledger import errors
from ledger.errors import DomainError
from ledger.household import Household
from ledger.resident import Resident

router = APIRouter(prefix="/v1")

WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


@router.post("/complexes", status_code=201, response_model=ComplexRegistered,
             responses=WRITE_ERRORS, tags=["registry"], summary="Register a complex (operator)")
def register_complex(body: RegisterComplexRequest,
                     write: Annotated[Write, Depends(writer(Role.OPERATOR))]
                     ) -> ComplexRegistered:
    outcome = write.execute(c.RegisterComplex(body.code, body.name, body.region))
    return ComplexRegistered(position=outcome.position, **outcome.result)


@router.post("/households", status_code=201, response_model=HouseholdRegistered,
             responses=WRITE_ERRORS, tags=["registry"],
             summary="Register a household in a complex (operator)")
def register_household(body: RegisterHouseholdRequest,
                       write: Annotated[Write, Depends(writer(Role.OPERATOR))]
                       ) -> HouseholdRegistered:
    outcome = write.execute(c.RegisterHousehold(body.complex_id, body.unit))
    return HouseholdRegistered(position=outcome.position, **outcome.result)


@router.post("/residents", status_code=201, response_model=ResidentEnrolled,
             responses=WRITE_ERRORS, tags=["registry"],
             summary="Enrol a resident (the resident, a coordinator of the complex, "
                     "or the platform)")
def enrol_resident(body: EnrolResidentRequest,
                   write: Annotated[Write, Depends(
                       writer(Role.RESIDENT, Role.COORDINATOR, Role.PLATFORM))]
                   ) -> ResidentEnrolled:
    principal = write.principal
    resident_id = body.resident_id
    if principal.role == Role.RESIDENT:
        if resident_id is not None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a resident enrols as the token's subject")
        # Only into the household the identity provider verified (the token's
        # household_id claim); any other answers as a missing household.
        if principal.household_id != body.household_id:
            raise DomainError(errors.unknown_household, str(body.household_id))
        resident_id = principal.subject
    elif principal.role == Role.COORDINATOR:
        household = write.services.ledger.snapshot(Household, body.household_id)
        if household is None or not in_complex(principal, household.home_complex_id):
            raise DomainError(errors.unknown_household, str(body.household_id))
    outcome = write.execute(c.EnrolResident(body.household_id, body.consent_ref, resident_id))
    return ResidentEnrolled(position=outcome.position, **outcome.result)


@router.post("/residents/{resident_id}/move-out", response_model=ResidentMovedOut,
             responses=WRITE_ERRORS, tags=["registry"],
             summary="Record that a resident moved out; closes the wallet "
                     "(a coordinator of the complex, or the operator)")
def move_out(resident_id: Annotated[UUID, Path()],
             write: Annotated[Write, Depends(writer(Role.COORDINATOR, Role.OPERATOR))]
             ) -> ResidentMovedOut:
    principal = write.principal
    on_behalf_of = None
    if principal.role == Role.COORDINATOR:
        resident = write.services.ledger.snapshot(Resident, resident_id)
        if resident is None or not in_complex(principal, resident.home_complex_id):
            raise DomainError(errors.unknown_resident, str(resident_id))
        on_behalf_of = resident_id
    outcome = write.execute(c.MoveOut(resident_id), on_behalf_of=on_behalf_of)
    return ResidentMovedOut(position=outcome.position, **outcome.result)


@router.post("/merchants", status_code=201, response_model=MerchantRegistered,
             responses=WRITE_ERRORS, tags=["registry"], summary="Register a merchant (operator)")
def register_merchant(body: RegisterMerchantRequest,
                      write: Annotated[Write, Depends(writer(Role.OPERATOR))]
                      ) -> MerchantRegistered:
    outcome = write.execute(c.RegisterMerchant(body.kind, body.name))
    return MerchantRegistered(position=outcome.position, **outcome.result)


@router.post("/merchants/{merchant_id}/payouts", status_code=201,
             response_model=MerchantPaidOut, responses=WRITE_ERRORS, tags=["registry"],
             summary="Pay out a merchant's settlement account in full (operator)")
def pay_out_merchant(merchant_id: Annotated[UUID, Path()], body: PayoutRequest,
                     write: Annotated[Write, Depends(writer(Role.OPERATOR))]
                     ) -> MerchantPaidOut:
    outcome = write.execute(c.PayOutMerchant(merchant_id, body.payout_id))
    return MerchantPaidOut(position=outcome.position, **outcome.result)


@router.put("/accrual-policy", response_model=AccrualPolicySet, responses=WRITE_ERRORS,
            tags=["registry"], summary="Set a new version of the accrual policy (operator)")
def set_accrual_policy(body: AccrualPolicyRequest,
                       write: Annotated[Write, Depends(writer(Role.OPERATOR))]
                       ) -> AccrualPolicySet:
    rows = [row.model_dump(exclude_none=True) for row in body.rates]
    lifecycle = None if body.lifecycle is None else body.lifecycle.model_dump(exclude_none=True)
    guards = None if body.guards is None else body.guards.model_dump(exclude_unset=True)
    outcome = write.execute(c.SetAccrualPolicy.of(rows, lifecycle, guards))
    return AccrualPolicySet(position=outcome.position, **outcome.result)
