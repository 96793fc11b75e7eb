package apierror

// The reasons of every ErrorInfo Lethe returns, declared in this one place
// so that the same condition carries the same reason in every service and a
// caller can branch on it. A reason is a stable UPPER_SNAKE identifier: it
// is part of the API, so an existing one is never renamed. Every
// FailedPrecondition and Unavailable names one of these (reasons_test.go
// fails on a literal or a constant declared elsewhere).
const (
	// ReasonNotFound: the named object does not exist for the tenant
	// (NotFound).
	ReasonNotFound = "NOT_FOUND"
	// ReasonAlreadyExists: the object to create exists already
	// (AlreadyExists).
	ReasonAlreadyExists = "ALREADY_EXISTS"
	// ReasonPermissionDenied: the caller may not call this method for this
	// tenant (PermissionDenied).
	ReasonPermissionDenied = "PERMISSION_DENIED"
	// ReasonBacklogFull: the event backlog passed its bound; retry later
	// (Unavailable, from the outbox of every service).
	ReasonBacklogFull = "BACKLOG_FULL"
	// ReasonShuttingDown: the service is stopping; reconnect, to another
	// replica or after the restart (Unavailable; consent's Watch).
	ReasonShuttingDown = "SHUTTING_DOWN"
	// ReasonRegistryUnreachable: the service has no registry connection to
	// check what the request names; retry later (Unavailable; retention).
	ReasonRegistryUnreachable = "REGISTRY_UNREACHABLE"

	// ReasonTaskNotOpen: the system has no open task for the cause or
	// request: it was never sent one, or its task is final already
	// (FailedPrecondition; consent's and DSAR's CompleteTask, DSAR's
	// claim check).
	ReasonTaskNotOpen = "TASK_NOT_OPEN"
	// ReasonAnswersItself: an operator tried to answer for a system that
	// answers through the SDK and reports its own outcome
	// (FailedPrecondition; consent's and DSAR's CompleteTask).
	ReasonAnswersItself = "ANSWERS_ITSELF"

	// ReasonIllegalTransition: the request's state does not allow the
	// change asked for (FailedPrecondition; DSAR).
	ReasonIllegalTransition = "ILLEGAL_TRANSITION"
	// ReasonIdentityNotVerified: the subject's identity is not verified yet
	// (FailedPrecondition; DSAR).
	ReasonIdentityNotVerified = "IDENTITY_NOT_VERIFIED"
	// ReasonExtensionRefused: the deadline was extended already, or the
	// first month is over (FailedPrecondition; DSAR's ExtendDeadline).
	ReasonExtensionRefused = "EXTENSION_REFUSED"
	// ReasonNoVerificationChannel: one-time codes cannot be sent for the
	// request: no channel to send them is configured, or the tenant's
	// verification method is not a code (FailedPrecondition; DSAR).
	ReasonNoVerificationChannel = "NO_VERIFICATION_CHANNEL"
	// ReasonCodeSpent: the one-time code expired or its attempts are spent,
	// or the most codes a request may be sent were sent
	// (FailedPrecondition; DSAR).
	ReasonCodeSpent = "CODE_SPENT"
	// ReasonCodeNotSent: the channel failed to send the one-time code; ask
	// for a new one (Unavailable; DSAR's StartVerification).
	ReasonCodeNotSent = "CODE_NOT_SENT"
	// ReasonKeyDestroyed: the request's key was destroyed; its identifiers
	// and package are gone (FailedPrecondition; DSAR).
	ReasonKeyDestroyed = "KEY_DESTROYED"
	// ReasonWrongRequestType: the method does not apply to the request's
	// type (FailedPrecondition; DSAR).
	ReasonWrongRequestType = "WRONG_REQUEST_TYPE"

	// ReasonRecoveryIncomplete: Check and CheckBatch refuse to decide while
	// limits may be lost beyond the event stream's reach after a restore
	// (FailedPrecondition; consent).
	ReasonRecoveryIncomplete = "RECOVERY_INCOMPLETE"
	// ReasonNoRecoveryGap: AcceptRecoveryGap was called while no recovery
	// gap stands (FailedPrecondition; consent).
	ReasonNoRecoveryGap = "NO_RECOVERY_GAP"
	// ReasonNoticeChanged: a banner decision names a notice version that is
	// not the purpose's current one; fetch the current notice and ask the
	// subject again (FailedPrecondition; consent's RecordBannerDecision and
	// its public endpoint, HTTP 409).
	ReasonNoticeChanged = "NOTICE_CHANGED"
	// ReasonConcurrentChange: the state the call was decided on changed
	// while it ran; retry (Unavailable; consent's LinkVisitor).
	ReasonConcurrentChange = "CONCURRENT_CHANGE"
	// ReasonHistoryOrder: a consent record given before the subject's
	// latest one for the purpose would overtake it; record earlier consents
	// first (FailedPrecondition; consent's RecordConsent).
	ReasonHistoryOrder = "HISTORY_ORDER"
	// ReasonGroundHasNoOutcome: a restriction on a ground that no outcome
	// ends (Art. 18(1)(b)) cannot be lifted by one; lift it by hand
	// (FailedPrecondition; consent).
	ReasonGroundHasNoOutcome = "GROUND_HAS_NO_OUTCOME"
	// ReasonRestrictionLifted: the restriction was lifted already
	// (FailedPrecondition; consent).
	ReasonRestrictionLifted = "RESTRICTION_LIFTED"
	// ReasonWatchLagged: the watcher fell behind the changes; reconnect
	// with the last revision received (Unavailable; consent's Watch).
	ReasonWatchLagged = "WATCH_LAGGED"
	// ReasonReadOnlyReplica: a consent read replica serves Check,
	// CheckBatch and Watch only; send every other call to the writer
	// (FailedPrecondition; consent).
	ReasonReadOnlyReplica = "READ_ONLY_REPLICA"
	// ReasonReplicaBehind: the answer would not reflect the min_revision
	// asked for within the bound, or the replica cannot vouch for the
	// tenant's state (a gap, an undecodable entry); its ErrorInfo metadata
	// "revision" is the revision it holds. Retry, or ask the writer
	// (FailedPrecondition; consent).
	ReasonReplicaBehind = "REPLICA_BEHIND"
	// ReasonHistoryUndone: a Watch resumed after a revision whose change
	// a restore of the consent writer from a backup undid; the ErrorInfo
	// metadata "undone_after" and "undone_through" bound the undone
	// revisions. Revert what came of those changes and watch again from
	// "undone_after" (FailedPrecondition; consent).
	ReasonHistoryUndone = "HISTORY_UNDONE"
	// ReasonHistoryTrimmed: a Watch resumed before the oldest change the
	// writer still keeps (--changes-kept-for); the ErrorInfo metadata
	// "trimmed_through" is the last revision no longer kept. Check again
	// what you keep of the tenant's decisions and watch again from it
	// (FailedPrecondition; consent).
	ReasonHistoryTrimmed = "HISTORY_TRIMMED"

	// ReasonHoldReleased: the legal hold was released already
	// (FailedPrecondition; retention).
	ReasonHoldReleased = "HOLD_RELEASED"

	// ReasonWrongShard: the tenant's consent state is on another consent
	// shard; its ErrorInfo metadata "shard" names the one to ask
	// (FailedPrecondition; consent). platform/shardrouter routes by it.
	ReasonWrongShard = "WRONG_SHARD"
	// ReasonConsentShardMove: an update names another consent shard for
	// the tenant; moving a tenant's consent state is a migration
	// (docs/scale.md), not a setting (FailedPrecondition; registry).
	ReasonConsentShardMove = "CONSENT_SHARD_MOVE"
)
