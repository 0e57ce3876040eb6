package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/helmchart/v2/loader"
	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
	"github.com/troupe-dev/troupe/events/historyapi"
)

type releaseOptions struct {
	namespace       string
	valuesFiles     []string
	valuesFrom      []string
	set             []string
	version         string
	repo            string
	kustomize       bool
	kustomizeRoot   string
	dryRun          bool
	noPrune         bool
	createNamespace bool
	waitLB          bool
	skipCRDs        bool
	adopt           bool
	reuseValues     bool
	resetThenReuse  bool
	postRenderers   string
	gates           []string
	namespaces      []string         // --namespaces
	many            []events.Release // NAME in each of namespaces
	waiting
}

func (c *cli) releaseCmd() *cobra.Command {
	o := releaseOptions{}
	cmd := &cobra.Command{
		Use:     "release NAME SOURCE [-n NS | --namespaces A,B,…] [-f values.yaml ...] [--set k=v ...] [--wait]",
		Aliases: []string{"upgrade"}, // not install: `troupe install` installs troupe itself
		Short:   "Install or upgrade a release: render SOURCE, apply it, wait for it to be ready",
		Long: `Request a new revision of a release (release.requested) and print its number; with --wait,
follow it through every stage and exit 0 once it is ready, 1 when it fails (with the stage, the
reason and the objects), like 'helm upgrade --install --wait'.

SOURCE is one of:
  ./chart or chart.tgz        a local Helm chart, uploaded to the sources object store by digest
  oci://host/repo/chart       a chart in an OCI registry (--version)
  CHART --repo URL            a chart from an HTTP chart repository (--version: version or range)
  DIR --kustomize             a kustomization; the directories it refers to are uploaded with it
  DIR or FILE.yaml            plain manifests, uploaded

Everything is checked here first: the name, the values files (readable YAML), --set syntax, that
the chart loads. Nothing is published when something is wrong.`,
		Example: `  troupe release hello ./examples/charts/hello -n demo --set replicaCount=2 --wait
  troupe release podinfo oci://ghcr.io/stefanprodan/charts/podinfo --version 6.14.1 --wait
  troupe release web ./deploy/overlays/dev --kustomize -n web --create-namespace
  troupe release hello ./examples/charts/hello --dry-run --wait   # what would change
  troupe release hello ./examples/charts/hello -n prod --gate approval --wait   # applied once 'troupe approve hello -n prod'
  troupe release hello ./examples/charts/hello --namespaces team-a,team-b,team-c --wait   # one chart, many namespaces`,
		Args: exactArgs(2, "release takes the release NAME and a SOURCE"),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if o.many, err = releasesArg(cmd, args[0], o.namespaces); err != nil {
				return err
			}
			return c.release(cmd.Context(), args[0], args[1], o)
		},
	}
	f := cmd.Flags()
	namespaceFlag(cmd, &o.namespace)
	namespacesFlag(cmd, &o.namespaces)
	f.StringArrayVarP(&o.valuesFiles, "values", "f", nil, "values file (repeatable; later ones win)")
	f.StringArrayVar(&o.valuesFrom, "values-from", nil, "values kept in the cluster, read by the renderer when it renders: secret/NAME[:KEY] or configmap/NAME[:KEY] in the release's namespace (KEY default values.yaml; repeatable; before -f, --set)")
	f.StringArrayVar(&o.set, "set", nil, "a value as key=value, Helm's syntax (repeatable)")
	f.StringVar(&o.version, "version", "", "chart version (OCI, repository: a version or a semver range)")
	f.StringVar(&o.repo, "repo", "", "chart repository URL; SOURCE is then the chart's name")
	f.BoolVar(&o.kustomize, "kustomize", false, "SOURCE is a kustomization directory")
	f.StringVar(&o.kustomizeRoot, "kustomize-root", "", "upload this directory with the kustomization (default: the smallest one holding every directory it refers to)")
	o.waiting.bind(cmd, "follow the revision and exit 0 when ready, 1 when it fails", "the revision's timeout: every stage ends by then")
	f.BoolVar(&o.rollbackOnFailure, "rollback-on-failure", false, "roll back to the previous ready revision if this one fails (--atomic)")
	f.BoolVar(&o.rollbackOnFailure, "atomic", false, "same as --rollback-on-failure")
	f.BoolVar(&o.dryRun, "dry-run", false, "render and diff against the cluster; change nothing")
	f.BoolVar(&o.noPrune, "no-prune", false, "keep objects the previous revision applied and this one does not")
	f.BoolVar(&o.createNamespace, "create-namespace", false, "create the namespace if it is missing")
	f.BoolVar(&o.skipCRDs, "skip-crds", false, "leave the chart's crds/ out, as helm install --skip-crds (a chart only)")
	f.BoolVar(&o.waitLB, "wait-load-balancer", false, "a LoadBalancer Service is ready only once it has an ingress address (default: once it has a cluster IP, as Helm 4)")
	f.BoolVar(&o.adopt, "adopt", false, "take over objects that exist but belong to no release or another one")
	f.StringVar(&o.postRenderers, "post-renderers", "", "a YAML file of post-renderers, as a Flux HelmRelease's spec.postRenderers: - kustomize: {patches: [{patch: ..., target: {...}}], images: [...]}")
	f.BoolVar(&o.reuseValues, "reuse-values", false, "build on the current revision's values (-f and --set over them), and its computed values in place of the chart's defaults, as helm upgrade --reuse-values")
	f.StringArrayVar(&o.gates, "gate", nil, "a gate this revision must pass, besides those its namespace requires ('troupe gate list'): applied only once the gate approved it (repeatable)")
	f.BoolVar(&o.resetThenReuse, "reset-then-reuse-values", false, "build on the current revision's values (-f and --set over them), with this chart's own defaults, as helm upgrade --reset-then-reuse-values")
	return cmd
}

func (c *cli) release(ctx context.Context, name, src string, o releaseOptions) error {
	rel, err := releaseArg(name, o.namespace)
	if len(o.many) > 0 {
		rel, err = o.many[0], nil
	}
	if err != nil {
		return err
	}
	if o.timeout <= 0 || o.timeout > events.MaxTimeout {
		return usagef("--timeout %s: want more than 0 and at most %s", o.timeout, events.MaxTimeout)
	}
	req := events.Requested{Set: o.set, RequestedBy: requester()}
	req.Options = events.Options{Timeout: events.Duration(o.timeout), Wait: o.wait, RollbackOnFailure: o.rollbackOnFailure,
		DryRun: o.dryRun, CreateNamespace: o.createNamespace, Adopt: o.adopt, WaitLoadBalancer: o.waitLB, Gates: o.gates}
	if o.noPrune {
		no := false
		req.Options.Prune = &no
	}
	for _, ref := range o.valuesFrom {
		v, err := parseValuesFrom(ref)
		if err != nil {
			return usagef("--values-from %s: %w", ref, err)
		}
		req.ValuesFrom = append(req.ValuesFrom, v)
	}
	if req.ValuesFiles, err = valuesFlags(o.valuesFiles, o.set); err != nil {
		return err
	}
	if o.postRenderers != "" {
		b, err := os.ReadFile(o.postRenderers)
		if err != nil {
			return usagef("--post-renderers %s: %w", o.postRenderers, err)
		}
		if err := yaml.UnmarshalStrict(b, &req.PostRenderers); err != nil {
			return usagef("--post-renderers %s: not a list of post-renderers (- kustomize: {patches: …, images: …}): %w", o.postRenderers, err)
		}
	}

	var upload func(context.Context, jetstream.JetStream) error
	if req.Source, upload, err = source(src, o, c.names); err != nil {
		return err
	}
	if o.skipCRDs {
		if req.Source.Helm == nil {
			return usagef("--skip-crds: SOURCE %s is not a chart", src)
		}
		req.Source.Helm.SkipCRDs = true
	}
	mode := ""
	if o.reuseValues || o.resetThenReuse {
		if o.reuseValues && o.resetThenReuse {
			return usagef("--reuse-values and --reset-then-reuse-values: one or the other")
		}
		if req.Source.Helm == nil {
			return usagef("--reuse-values: SOURCE %s is not a chart", src)
		}
		mode = events.ReuseValuesReuse
		if o.resetThenReuse {
			mode = events.ReuseValuesResetThenReuse
		}
	}
	// Each release's request: the same, but for the values it reuses, its own.
	request := func(rel events.Release) (any, error) {
		req := req
		if mode != "" {
			reuse, err := c.valuesToReuse(ctx, rel, mode)
			if err != nil {
				return nil, err
			}
			req.ReuseValues = reuse
		}
		if err := req.Validate(); err != nil {
			return nil, usageError{err}
		}
		return req, nil
	}
	o.numbered = true
	if len(o.many) > 0 {
		return c.sendMany(ctx, o.many, events.TypeRequested, request, upload, o.waiting)
	}
	r, err := request(rel)
	if err != nil {
		return err
	}
	return c.send(ctx, rel, events.TypeRequested, r, upload, o.waiting)
}

// valuesToReuse names the values a --reuse-values request builds on, as Helm's upgrade picks
// them: the current (deployed) revision's, else the latest revision's that has them; nil for a
// release with none (a first install: nothing to reuse, as under Helm).
func (c *cli) valuesToReuse(ctx context.Context, rel events.Release, mode string) (*events.ReuseValues, error) {
	nc, err := c.natsConn("troupe-cli")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var v historyapi.View
	if err := ask(ctx, nc, c.names, historyapi.EndpointGet, historyapi.Query{Release: rel.String()}, &v); notFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var from *historyapi.Revision
	if cur := v.Get(v.Current); cur != nil && cur.Values != "" {
		from = cur
	}
	for i := len(v.Revisions) - 1; i >= 0 && from == nil; i-- {
		if v.Revisions[i].Values != "" {
			from = v.Revisions[i]
		}
	}
	if from == nil {
		return nil, nil
	}
	return &events.ReuseValues{Mode: mode, Revision: from.Revision, Values: from.Values}, nil
}

// electionPatience is how long a command rides out NATS not answering (a JetStream leader
// election after a node went down takes a few seconds) before it fails.
const electionPatience = 30 * time.Second

// watchdogGrace is how long past a deadline the history's deadline watchdog ends a flow
// (history.DefaultGrace; the lean CLI does not link the service).
const watchdogGrace = 10 * time.Second

// waiting is how a command that publishes a request follows it: --wait, --timeout and -o.
type waiting struct {
	wait              bool
	timeout           time.Duration
	output            output
	rollbackOnFailure bool // follow the automatic rollback of a failed revision too
	numbered          bool // a new revision: print the number the request got
	quietAfter        time.Duration
}

func (w *waiting) bind(cmd *cobra.Command, waitHelp, timeoutHelp string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, waitHelp)
	cmd.Flags().DurationVar(&w.timeout, "timeout", events.DefaultTimeout, timeoutHelp)
	cmd.Flags().DurationVar(&w.quietAfter, "quiet-after", 10*time.Second, "with --wait: say which service it waits for after this long without news")
	_ = cmd.Flags().MarkHidden("quiet-after") // for tests; 10 s suits people
	w.output.bind(cmd)
}

// send publishes the CLI's request typ for rel — once before (nil: nothing) has put what it
// refers to in the stores — and follows it as w says, under the root span of its trace (traced).
func (c *cli) send(ctx context.Context, rel events.Release, typ string, data any, before func(context.Context, jetstream.JetStream) error, w waiting) error {
	e, err := events.NewEvent(events.SourcePrefix+"cli", typ, rel, data)
	if err != nil {
		return usageError{err}
	}
	nc, js, err := c.connect("troupe-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	return c.traced(ctx, e, func(ctx context.Context) error {
		if before != nil {
			if err := before(ctx, js); err != nil {
				return err
			}
		}
		return c.publishAndFollow(ctx, js, rel, e, w)
	})
}

// publishAndFollow publishes e and, with --wait (how), follows its flow until it ends.
func (c *cli) publishAndFollow(ctx context.Context, js jetstream.JetStream, rel events.Release, e event.Event, how waiting) error {
	// The same event again is one message (the stream drops a repeated id), so a publish that
	// did not answer is tried again.
	pub := events.NewPublisher(js, c.names)
	var ack *jetstream.PubAck
	err := events.Await(ctx, electionPatience, func() (err error) {
		ack, err = pub.Publish(ctx, e)
		return err
	})
	if err != nil {
		return err
	}
	revision := 0
	if how.numbered {
		err := events.Await(ctx, electionPatience, func() error {
			revs, err := events.NewRevisions(ctx, js, c.names)
			if err == nil {
				revision, err = revs.Peek(ctx, rel, ack.Sequence)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	text := how.output == "table"
	if text {
		if how.numbered {
			fmt.Fprintf(c.stdout, "%s: revision %d requested (event %s)\n", rel, revision, shortID(e.ID()))
		} else {
			fmt.Fprintf(c.stdout, "%s: %s published (event %s)\n", rel, e.Type(), shortID(e.ID()))
		}
	}
	if !how.wait {
		if !text {
			return how.output.print(c.stdout, flow.Outcome{Release: rel.String(), Revision: revision, State: historyapi.StateRequested}, nil)
		}
		return nil
	}
	var w *flow.Watcher
	err = events.Await(ctx, electionPatience, func() (err error) {
		w, err = flow.Watch(ctx, js, c.names, rel, ack.Sequence)
		return err
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	// The flow ends by its deadline, or — nobody answering — the deadline watchdog ends it a
	// grace later: the wait follows the stream until then, and gives up only when even the
	// watchdog's event does not come (the history service is not running).
	until := events.FlowDeadline(e).Add(watchdogGrace + 20*time.Second)
	if how.rollbackOnFailure {
		until = until.Add(how.timeout) // the automatic rollback is a flow of its own, with its own deadline
	}
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	p := &progress{start: time.Now()}
	if text {
		p.w = c.stdout
	}
	// Follow says nothing of gates: a watch of their verdicts beside it does (best effort: without
	// it, the flow is followed all the same).
	var gw *flow.Watcher
	if err := events.Await(ctx, electionPatience, func() (err error) {
		gw, err = flow.Watch(ctx, js, c.names, rel, ack.Sequence)
		return err
	}); err == nil {
		g, stop := watchGates(wctx, gw, e.ID())
		// The watch stopped before its reader is waited for (deferred calls run last first).
		defer stop()
		defer gw.Stop()
		p.gates = g
		gctx, cancel := context.WithCancel(wctx)
		defer cancel()
		go g.run(gctx, p.print)
	}
	res, ferr := flow.Follow(wctx, w, rel, e.ID(), flow.FollowOptions{RollbackOnFailure: how.rollbackOnFailure, QuietAfter: how.quietAfter, Start: p.start}, p.step)
	if ferr == nil && res.Reason == flow.ReasonWaitTimeout && ctx.Err() == nil {
		res.Message = fmt.Sprintf("no terminal event %s past the deadline, not even the deadline watchdog's: is the history service running? The release may still be going: troupe status %s",
			time.Since(events.FlowDeadline(e)).Round(time.Second), rel)
	}
	if ferr == nil && !res.Succeeded() {
		ferr = exitError{1, errors.New(res.Summary())}
	}
	if res.Revision == 0 {
		res.Revision = revision
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out := followed{Outcome: res}
	if p.gates != nil {
		out.Gates = p.gates.verdicts()
	}
	if text {
		if res.State == historyapi.StateDiffed {
			c.printDiff(res.Diff)
			printGates(c.stdout, out.Gates)
		}
	} else if err := how.output.print(c.stdout, out, nil); err != nil {
		return err
	}
	return ferr
}

// followed is what `--wait -o json|yaml` prints: how the flow ended, and what the gates of its
// revision said (for a dry run: what they would say).
type followed struct {
	flow.Outcome
	Gates []events.GateVerdict `json:"gates,omitempty"`
}

// printGates prints what a dry run's gates would say of the bundle.
func printGates(w io.Writer, gates []events.GateVerdict) {
	for _, g := range gates {
		switch g.Verdict {
		case events.VerdictApproved:
			fmt.Fprintf(w, "gate %s would approve it\n", g.Gate)
		case events.VerdictRejected:
			fmt.Fprintf(w, "gate %s would reject it: %s\n", g.Gate, firstLine(g.Message))
			for _, f := range g.Findings {
				what := f.Rule
				if f.Object != nil {
					what = f.Object.String()
				}
				fmt.Fprintf(w, "    %s: %s\n", what, f.Message)
			}
		default:
			fmt.Fprintf(w, "gate %s did not say\n", g.Gate)
		}
	}
}

func (c *cli) printDiff(objs []events.ObjectDiff) {
	for _, o := range objs {
		mark := map[string]string{events.ActionCreate: "+", events.ActionUpdate: "~", events.ActionUnchanged: "=", events.ActionPrune: "-"}[o.Action]
		fmt.Fprintf(c.stdout, "%s %s (%s)\n", mark, o.ObjectRef, o.Action)
		if o.Diff != "" {
			for _, l := range strings.Split(strings.TrimRight(o.Diff, "\n"), "\n") {
				fmt.Fprintf(c.stdout, "    %s\n", l)
			}
		}
	}
}

func requester() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		who += "@" + h
	}
	return who
}

// source turns SOURCE into the request's source. Local content is read and checked here, before
// anything is sent; upload is what remains to do once connected (nil for remote sources): it puts
// the content in the sources object store and sets its digest in the source.
func source(src string, o releaseOptions, names events.Names) (s events.Source, upload func(ctx context.Context, js jetstream.JetStream) error, err error) {
	switch {
	case o.repo != "":
		if o.kustomize {
			return s, nil, usagef("--repo and --kustomize do not go together")
		}
		return events.Source{Helm: &events.HelmSource{RepoURL: o.repo, Chart: src, Version: o.version}}, nil, nil
	case strings.HasPrefix(src, "oci://"):
		return events.Source{Helm: &events.HelmSource{OCI: src, Version: o.version}}, nil, nil
	case strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		return s, nil, usagef("SOURCE %s: for a chart repository, give the chart's name and --repo %s", src, src)
	}
	info, err := os.Stat(src)
	if err != nil {
		return s, nil, usagef("SOURCE %s: %w; want a chart directory or .tgz, oci://…, CHART --repo URL, a kustomization with --kustomize, or a manifests directory", src, err)
	}
	var data []byte
	var digest *string
	switch {
	case o.kustomize:
		if !info.IsDir() {
			return s, nil, usagef("--kustomize: %s is not a directory", src)
		}
		var dir string
		if data, dir, err = kustomizeArchive(src, o.kustomizeRoot); err != nil {
			return s, nil, err
		}
		s.Kustomize = &events.KustomizeSource{Dir: dir}
		digest = &s.Kustomize.Object
	case isChart(src, info):
		if data, err = chartArchive(src, info.IsDir()); err != nil {
			return s, nil, err
		}
		s.Helm = &events.HelmSource{}
		digest = &s.Helm.Object
	default:
		if data, err = manifests(src); err != nil {
			return s, nil, err
		}
		s.Manifests = &events.ManifestsSource{}
		digest = &s.Manifests.Object
	}
	*digest = events.Digest(data) // set now, so the request validates before anything is sent
	return s, func(ctx context.Context, js jetstream.JetStream) error {
		err := events.Await(ctx, electionPatience, func() error {
			store, err := events.OpenObjects(ctx, js, names.Objects(events.BucketSources))
			if err != nil {
				return err
			}
			if ok, err := store.Has(ctx, *digest); err == nil && ok {
				return nil // uploaded before: content-addressed
			}
			d, _, err := store.Put(ctx, bytes.NewReader(data))
			if err == nil && d != *digest {
				err = fmt.Errorf("the store computed %s, not %s", d, *digest)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("upload %s: %w", src, err)
		}
		return nil
	}, nil
}

func isChart(path string, info os.FileInfo) bool {
	if !info.IsDir() {
		return strings.HasSuffix(path, ".tgz") || strings.HasSuffix(path, ".tar.gz")
	}
	_, err := os.Stat(filepath.Join(path, "Chart.yaml"))
	return err == nil
}

// chartArchive loads a chart as Helm does (so a broken chart is an error here) and returns it as
// a .tgz: a directory is archived from the files Helm loaded (.helmignore applied), in name
// order with no times, so the same chart always has the same digest.
func chartArchive(path string, dir bool) ([]byte, error) {
	ch, err := loader.Load(path)
	if err != nil {
		return nil, usagef("chart %s: %w", path, err)
	}
	if err := ch.Validate(); err != nil {
		return nil, usagef("chart %s: %w", path, err)
	}
	if !dir {
		return os.ReadFile(path)
	}
	files := map[string][]byte{}
	for _, f := range ch.Raw {
		files[ch.Name()+"/"+f.Name] = f.Data
	}
	// A file:// dependency not in charts/ is vendored here, as `helm dependency build` would:
	// the renderer cannot read the uploader's disk. Others the renderer fetches.
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, dep := range ch.Metadata.Dependencies {
		if dep == nil || have[dep.Name] || !strings.HasPrefix(dep.Repository, "file://") {
			continue
		}
		at := filepath.Join(path, strings.TrimPrefix(dep.Repository, "file://"))
		sub, err := chartArchive(at, true)
		if err != nil {
			return nil, usagef("chart %s: dependency %s (%s): %w", path, dep.Name, dep.Repository, err)
		}
		files[ch.Name()+"/charts/"+dep.Name+".tgz"] = sub
	}
	return tarGz(files)
}

// manifests reads a YAML file, or a directory's .yaml/.yml/.json files (recursively, in name
// order), as one multi-document YAML.
func manifests(path string) ([]byte, error) {
	var buf bytes.Buffer
	err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
		default:
			if p != path {
				return nil
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, "---\n# Source: %s\n", p)
		buf.Write(b)
		buf.WriteString("\n")
		return nil
	})
	if err != nil {
		return nil, usagef("manifests %s: %w", path, err)
	}
	if buf.Len() == 0 {
		return nil, usagef("manifests %s: no .yaml, .yml or .json files", path)
	}
	return buf.Bytes(), nil
}

// kustomizeArchive archives the kustomization at dir with every directory it refers to (its
// resources, bases and components, followed recursively), from their smallest common root (only
// the files under those directories), or everything under root when given; it returns the archive and dir's path inside it.
func kustomizeArchive(dir, root string) ([]byte, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	var dirs map[string]bool // what to upload: every file under these; nil: all of root
	if root == "" {
		dirs = map[string]bool{}
		if err := kustomizeDirs(abs, dirs); err != nil {
			return nil, "", usagef("--kustomize %s: %w", dir, err)
		}
		root = abs
		for d := range dirs {
			for !strings.HasPrefix(d+string(filepath.Separator), root+string(filepath.Separator)) {
				root = filepath.Dir(root)
			}
		}
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, "", err
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, "", usagef("--kustomize-root %s does not hold %s", root, dir)
	}
	files := map[string][]byte{}
	var size int
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "node_modules" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || dirs != nil && !under(dirs, root, filepath.Dir(p)) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if size += len(b); size > 64<<20 {
			return fmt.Errorf("more than 64 MiB under %s: name a smaller --kustomize-root", root)
		}
		r, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(r)] = b
		return nil
	})
	if err != nil {
		return nil, "", usagef("--kustomize %s: %w", dir, err)
	}
	data, err := tarGz(files)
	return data, filepath.ToSlash(rel), err
}

// under reports whether dir is one of dirs or below one, looking no higher than root.
func under(dirs map[string]bool, root, dir string) bool {
	for {
		if dirs[dir] {
			return true
		}
		if dir == root || len(dir) <= len(root) {
			return false
		}
		dir = filepath.Dir(dir)
	}
}

// kustomizeDirs adds dir and every local directory its kustomization refers to, recursively.
func kustomizeDirs(dir string, seen map[string]bool) error {
	if seen[dir] {
		return nil
	}
	seen[dir] = true
	var b []byte
	var err error
	for _, n := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if b, err = os.ReadFile(filepath.Join(dir, n)); err == nil {
			break
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s has no kustomization.yaml", dir)
		}
		return err
	}
	var k struct {
		Resources  []string `json:"resources"`
		Bases      []string `json:"bases"`
		Components []string `json:"components"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	for _, r := range slices.Concat(k.Resources, k.Bases, k.Components) {
		if lower := strings.ToLower(r); strings.Contains(r, "://") || strings.HasPrefix(lower, "git::") || strings.HasPrefix(lower, "github.com") ||
			strings.Contains(strings.SplitN(r, "/", 2)[0], "@") {
			continue // remote: the renderer fetches it, from a host its --kustomize-remote-hosts lists
		}
		p := filepath.Join(dir, r)
		info, err := os.Stat(p)
		switch {
		case err != nil:
			return fmt.Errorf("%s/kustomization.yaml refers to %s: %w", dir, r, err)
		case info.IsDir():
			if err := kustomizeDirs(p, seen); err != nil {
				return err
			}
		default:
			seen[filepath.Dir(p)] = true
		}
	}
	return nil
}

// tarGz writes files into a .tar.gz in name order, with no times or owners.
func tarGz(files map[string][]byte) ([]byte, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // level: a CLI process pays for the compressor's tables
	tw := tar.NewWriter(gz)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, bytes.NewReader(files[n])); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parseValuesFrom reads --values-from's secret/NAME[:KEY] or configmap/NAME[:KEY].
func parseValuesFrom(s string) (events.ValuesFrom, error) {
	kind, rest, ok := strings.Cut(s, "/")
	name, key, _ := strings.Cut(rest, ":")
	v := events.ValuesFrom{Name: name, Key: key}
	switch strings.ToLower(kind) {
	case "secret":
		v.Kind = "Secret"
	case "configmap", "cm":
		v.Kind = "ConfigMap"
	default:
		ok = false
	}
	if !ok || name == "" {
		return v, errors.New("want secret/NAME[:KEY] or configmap/NAME[:KEY]")
	}
	return v, nil
}

// valuesFlags reads the -f files, each a YAML map of values, and checks each --set, as a
// request carries them (`troupe release`, `troupe install`).
func valuesFlags(files, set []string) ([]events.ValuesFile, error) {
	var out []events.ValuesFile
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usagef("-f %s: %w", path, err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, usagef("-f %s: not a YAML map of values: %w", path, err)
		}
		out = append(out, events.ValuesFile{Name: path, Content: string(b)})
	}
	for _, s := range set {
		if err := strvals.ParseInto(s, map[string]any{}); err != nil {
			return nil, usagef("--set %s: %w", s, err)
		}
	}
	return out, nil
}
