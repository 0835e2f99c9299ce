package tlsrpt

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"slices"
	"time"
)

// Report is an RFC 8460 §4.4 aggregate report: one UTC day of one
// policy domain. The JSON tags are the RFC's field names.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the period a report covers. Times are UTC, whole
// seconds, so they marshal as RFC 3339 "2016-04-01T00:00:00Z".
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is one element of policies[].
type PolicyResult struct {
	Policy  PolicyKey `json:"policy"`
	Summary Summary   `json:"summary"`
	// FailureDetails is always present, empty when nothing failed, so
	// receivers that iterate it without a presence check do not break.
	FailureDetails []FailureDetails `json:"failure-details"`
}

// Summary holds the session totals of a policy.
type Summary struct {
	TotalSuccessfulSessionCount int64 `json:"total-successful-session-count"`
	TotalFailureSessionCount    int64 `json:"total-failure-session-count"`
}

// FailureDetails is one element of failure-details[]. The counts of all
// details may add up to less than TotalFailureSessionCount when the
// recorder's detail caps were reached.
type FailureDetails struct {
	FailureDetail
	FailedSessionCount int64 `json:"failed-session-count"`
}

// ReportInfo is what a report says about its sender.
type ReportInfo struct {
	OrganizationName string // organization-name
	ContactInfo      string // contact-info: a mailbox or URL
	// Submitter is our domain: TLS-Report-Submitter and the first part
	// of the attachment file name.
	Submitter string
	// ReportID makes report-id; nil means DefaultReportID.
	ReportID func(day time.Time, policyDomain string) string
}

// DefaultReportID is "2016-04-01_example.com@mx.submitter.example". It is
// unique per day, policy domain and submitter, and stays the same when a
// delivery is retried so receivers can drop duplicates. It is also a
// valid RFC 5322 msg-id, which the §5.3 Subject wants.
func DefaultReportID(day time.Time, policyDomain, submitter string) string {
	return utcDay(day).Format(dayLayout) + "_" + policyDomain + "@" + submitter
}

func (info ReportInfo) reportID(day time.Time, domain string) string {
	if info.ReportID != nil {
		return info.ReportID(day, domain)
	}
	return DefaultReportID(day, domain, info.Submitter)
}

// PolicyDomain is the domain the report is about.
func (r *Report) PolicyDomain() string {
	if len(r.Policies) == 0 {
		return ""
	}
	return r.Policies[0].Policy.Domain
}

// buildReport copies dom's counts into a report; the caller holds the
// recorder's lock.
func buildReport(start time.Time, domain string, dom *domainState, info ReportInfo) *Report {
	rep := &Report{
		OrganizationName: info.OrganizationName,
		// §4.1: a report covers a full UTC day; the end is its last
		// second, as in the RFC's example.
		DateRange:   DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo: info.ContactInfo,
		ReportID:    info.reportID(start, domain),
		Policies:    []PolicyResult{},
	}
	for _, id := range sortedKeys(dom.policies) {
		p := dom.policies[id]
		rep.Policies = append(rep.Policies, PolicyResult{
			Policy: PolicyKey{
				Type:   p.key.Type,
				String: slices.Clone(p.key.String),
				Domain: p.key.Domain,
				MXHost: slices.Clone(p.key.MXHost),
			},
			Summary: Summary{
				TotalSuccessfulSessionCount: p.success,
				TotalFailureSessionCount:    p.failure,
			},
			FailureDetails: sortedDetails(p.details),
		})
	}
	return rep
}

// sortedDetails orders details by count, most frequent first, then by
// content, so reports and the state file are deterministic.
func sortedDetails(m map[FailureDetail]int64) []FailureDetails {
	out := make([]FailureDetails, 0, len(m))
	for d, n := range m {
		out = append(out, FailureDetails{FailureDetail: d, FailedSessionCount: n})
	}
	slices.SortFunc(out, func(a, b FailureDetails) int {
		return cmp.Or(
			cmp.Compare(b.FailedSessionCount, a.FailedSessionCount),
			cmp.Compare(a.ResultType, b.ResultType),
			cmp.Compare(a.ReceivingMXHostname, b.ReceivingMXHostname),
			cmp.Compare(a.ReceivingIP, b.ReceivingIP),
			cmp.Compare(a.SendingMTAIP, b.SendingMTAIP),
			cmp.Compare(a.ReceivingMXHelo, b.ReceivingMXHelo),
			cmp.Compare(a.FailureReasonCode, b.FailureReasonCode),
			cmp.Compare(a.AdditionalInformation, b.AdditionalInformation),
		)
	})
	return out
}

// gzipJSON is the report as both transports carry it
// (application/tlsrpt+gzip).
func gzipJSON(r *Report) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(js); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
