package dsar

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// retainedViolations is contract.CheckRetained as field violations of a
// request whose list of retentions is field.
func retainedViolations(field string, kept []*eventsv1.Retention) []apierror.FieldViolation {
	var v []apierror.FieldViolation
	for _, p := range contract.CheckRetained(field, kept) {
		v = append(v, apierror.FieldViolation{Field: p.Field, Description: p.Description})
	}
	return v
}

// checkOutcome is the tracker's check of an answer that arrived on the
// stream: a RETAINED answer to an erasure must name an Art. 17(3) ground
// for everything it keeps. One that does not closes its task FAILED, with
// the fields at fault, for an operator to follow up: data kept without a
// ground is not an answer the subject can be given.
func checkOutcome(task tasks.Task, o *eventsv1.Outcome) string {
	if task.Kind != contract.KindErasureRequested || o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		return ""
	}
	ps := contract.CheckRetained("retained", o.GetRetained())
	if len(ps) == 0 {
		return ""
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Error()
	}
	return "answered RETAINED without a ground to keep the data (GDPR Art. 17(3)): " + strings.Join(parts, "; ")
}

// Texts of the remedies a refusal names (Art. 12(4)).
const (
	complaintText = "You may lodge a complaint with a supervisory authority (GDPR Art. 77(1)), in particular in the Member State of your habitual residence, place of work or place of the alleged infringement."
	judicialText  = "You have the right to an effective judicial remedy against the controller (GDPR Art. 79(1)), before the courts of the Member State where the controller has an establishment or where you have your habitual residence (Art. 79(2)), and against a legally binding decision of a supervisory authority (Art. 78)."
)

// remediesOf is what a refusal tells the subject they can do about it
// (Art. 12(4)), naming the tenant's supervisory authority when its
// settings give one.
func remediesOf(settings *registryv1.TenantSettings) *dsarv1.Remedies {
	r := &dsarv1.Remedies{Complaint: complaintText, JudicialRemedy: judicialText}
	if sa := settings.GetSupervisoryAuthority(); sa.GetName() != "" {
		r.SupervisoryAuthority = proto.Clone(sa).(*registryv1.SupervisoryAuthority)
		r.Complaint = fmt.Sprintf("You may lodge a complaint with %s (GDPR Art. 77(1))", sa.Name)
		if sa.Url != "" {
			r.Complaint += ", " + sa.Url
		}
		r.Complaint += ", or with the supervisory authority of the Member State of your habitual residence, place of work or place of the alleged infringement."
	}
	return r
}

// minimise returns the identifiers a system is given by the claim check:
// every one, plain, when its registration declares no identifiers (as
// before declarations existed); otherwise only the kinds it declares, in
// the forms it declares (Art. 5(1)(c)). A system that holds e-mail
// addresses only hashed never receives the address.
func minimise(ids []*commonv1.Identifier, held []*registryv1.HeldIdentifier) []*commonv1.Identifier {
	if len(held) == 0 {
		return ids
	}
	var out []*commonv1.Identifier
	for _, id := range ids {
		for _, h := range held {
			if h.Type != id.Type {
				continue
			}
			for _, f := range h.Forms {
				out = append(out, &commonv1.Identifier{Type: id.Type, Form: f, Value: contract.EncodeIdentifier(id.Type, id.Value, f)})
			}
		}
	}
	return out
}

// holdsPlain reports whether a system holds any identifier as it is; a
// system with no declaration does.
func holdsPlain(held []*registryv1.HeldIdentifier) bool {
	if len(held) == 0 {
		return true
	}
	for _, h := range held {
		for _, f := range h.Forms {
			if f == commonv1.IdentifierForm_IDENTIFIER_FORM_PLAIN {
				return true
			}
		}
	}
	return false
}

// systemIdentifiers returns the identifier forms a system's registration
// declares. Without an answer from the registry nothing is handed out.
func (s *Service) systemIdentifiers(ctx context.Context, tenant, system string) ([]*registryv1.HeldIdentifier, error) {
	sys, err := s.registeredSystem(ctx, tenant, system)
	if err != nil {
		return nil, err
	}
	return sys.GetIdentifiers(), nil
}

// registeredSystem reads system's registration from the registry; an
// error from the registry keeps its status (NotFound for a system that is
// not registered).
func (s *Service) registeredSystem(ctx context.Context, tenant, system string) (*registryv1.System, error) {
	if s.registry == nil {
		return nil, fmt.Errorf("dsar: no registry connection to read system %q", system)
	}
	resp, err := s.registry.GetSystem(ctx, &registryv1.GetSystemRequest{TenantId: tenant, SystemId: system})
	if err != nil {
		return nil, fmt.Errorf("registry: get system %s: %w", system, err)
	}
	return resp.GetSystem(), nil
}

// provenances returns the provenance of every category of the tenant's
// taxonomy, as the registry resolves it (inherited from the parent when a
// category states none).
func (s *Service) provenances(ctx context.Context, tenant string) (map[string]registryv1.DataProvenance, error) {
	if s.registry == nil {
		return nil, fmt.Errorf("dsar: no registry connection to read the categories' provenance")
	}
	out := map[string]registryv1.DataProvenance{}
	token := ""
	for {
		resp, err := s.registry.ListCategories(ctx, &registryv1.ListCategoriesRequest{TenantId: tenant, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("registry: list categories: %w", err)
		}
		for _, c := range resp.Categories {
			out[c.Id] = c.Provenance
		}
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// provenanceOf is a category's provenance: its own, else its nearest
// ancestor's; unspecified when none states one.
func provenanceOf(m map[string]registryv1.DataProvenance, category string) registryv1.DataProvenance {
	for c := category; c != ""; c = contract.CategoryParent(c) {
		if p := m[c]; p != registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED {
			return p
		}
	}
	return registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED
}

// portableProvenance reports whether Art. 20(1) covers data of provenance
// p: data the subject provided, which includes data observed from their
// activity (WP242 rev.01, section III.1), but not data the controller
// inferred or derived, nor data from third parties.
func portableProvenance(p registryv1.DataProvenance) bool {
	return p == registryv1.DataProvenance_DATA_PROVENANCE_PROVIDED || p == registryv1.DataProvenance_DATA_PROVENANCE_OBSERVED
}
