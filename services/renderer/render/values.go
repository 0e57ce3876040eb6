package render

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"

	"github.com/troupe-dev/troupe/events"
)

// reuseValues builds user on the values of the revision the request's ReuseValues names, as
// Helm's upgrade action does (its reuseValues): the request's values over that revision's
// user-supplied ones (util.CoalesceTables, a null deleting a key); with --reuse-values the
// chart's defaults are that revision's computed values, so a new chart version's new defaults
// are not taken (Helm's behaviour, which --reset-then-reuse-values exists to avoid). ch is the
// render's own copy (loadChart).
func (r *Renderer) reuseValues(ctx context.Context, ch *chart.Chart, user map[string]any, in Input) (_ map[string]any, fromHelm bool, _ error) {
	reuse := in.Request.ReuseValues
	if reuse == nil {
		return user, false, nil
	}
	rec, err := r.readValuesRecord(ctx, reuse)
	if err != nil {
		return nil, false, err
	}
	if rec.Release != in.Release.String() {
		return nil, false, fail(ReasonSourceNotFound, nil, "reuseValues: the values %s are %s's, not %s's", reuse.Values, rec.Release, in.Release)
	}
	user = util.CoalesceTables(user, copyValues(rec.User))
	switch reuse.Mode {
	case events.ReuseValuesReuse:
		ch.Values = copyValues(rec.Computed)
	case events.ReuseValuesResetThenReuse:
	default:
		return nil, false, fail(ReasonInvalidValues, nil, "reuseValues: mode %q is neither %s nor %s", reuse.Mode, events.ReuseValuesReuse, events.ReuseValuesResetThenReuse)
	}
	return user, rec.FromHelm, nil
}

func (r *Renderer) readValuesRecord(ctx context.Context, reuse *events.ReuseValues) (*events.ValuesRecord, error) {
	what := fmt.Sprintf("reuseValues: the values of revision %d (%s)", reuse.Revision, reuse.Values)
	if r.opts.Records == nil {
		return nil, fail(ReasonSourceNotFound, nil, "%s: this renderer reads no bundles object store", what)
	}
	rc, err := r.opts.Records(ctx, reuse.Values)
	if errors.Is(err, events.ErrNotFound) {
		return nil, fail(ReasonSourceNotFound, nil, "%s are no longer in the bundles object store", what)
	}
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "%s", what)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(r.opts.MaxBundleSize)+1))
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "%s", what)
	}
	var rec events.ValuesRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.Release == "" {
		return nil, fail(ReasonInvalidValues, nil, "%s: not a values record", what)
	}
	return &rec, nil
}

// valuesRecord is the revision's values as `helm get values` shows them: user as the request
// set them (valuesFrom left out), and computed, user coalesced with ch's defaults as Helm's
// `get values --all` coalesces the release's chart (after its dependencies were processed).
func valuesRecord(ch *chart.Chart, user map[string]any, rel events.Release, fromHelm bool) ([]byte, error) {
	computed, err := util.CoalesceValues(ch, user)
	if err != nil {
		return nil, fail(ReasonInvalidValues, err, "chart %s: coalesce values", ch.Metadata.Name)
	}
	return encodeValues(rel, user, computed, fromHelm)
}

func encodeValues(rel events.Release, user, computed map[string]any, fromHelm bool) ([]byte, error) {
	if user == nil {
		user = map[string]any{}
	}
	b, err := json.Marshal(events.ValuesRecord{Release: rel.String(), User: user, Computed: computed, FromHelm: fromHelm})
	if err != nil {
		return nil, fail(ReasonInvalidValues, err, "encode values")
	}
	return b, nil
}
