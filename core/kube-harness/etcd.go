package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/embed"
)

func etcdVersion() string { return version.Version }

func parseURLs(flagName, s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flagName, err)
		}
		out = append(out, *u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: no URL", flagName)
	}
	return out, nil
}

// runEtcd runs a single-member etcd server in this process (go.etcd.io/etcd/server/v3/embed) until
// SIGTERM/SIGINT or a server error. Flag names follow etcd's own; only what the lab needs is exposed.
func runEtcd() int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "default", "member name")
	dataDir := fs.String("data-dir", "", "data directory (required)")
	listenClient := fs.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to listen on")
	advertiseClient := fs.String("advertise-client-urls", "", "client URLs to advertise (default: --listen-client-urls)")
	listenPeer := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URLs to listen on (single member: loopback)")
	listenMetrics := fs.String("listen-metrics-urls", "", "extra URLs serving /metrics and /health only")
	certFile := fs.String("cert-file", "", "client-facing TLS certificate")
	keyFile := fs.String("key-file", "", "client-facing TLS key")
	trustedCA := fs.String("trusted-ca-file", "", "CA for client certificates")
	clientCertAuth := fs.Bool("client-cert-auth", false, "require client certificates signed by --trusted-ca-file")
	quota := fs.Int64("quota-backend-bytes", 0, "backend quota in bytes (0: etcd's default)")
	noFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync (disposable data only)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.Logger = "zap"
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = *noFsync
	if *quota > 0 {
		cfg.QuotaBackendBytes = *quota
	}
	var err error
	if cfg.ListenClientUrls, err = parseURLs("listen-client-urls", *listenClient); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 2
	}
	adv := *advertiseClient
	if adv == "" {
		adv = *listenClient
	}
	if cfg.AdvertiseClientUrls, err = parseURLs("advertise-client-urls", adv); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 2
	}
	if cfg.ListenPeerUrls, err = parseURLs("listen-peer-urls", *listenPeer); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 2
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if *listenMetrics != "" {
		if cfg.ListenMetricsUrls, err = parseURLs("listen-metrics-urls", *listenMetrics); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			return 2
		}
	}
	cfg.ClientTLSInfo.CertFile = *certFile
	cfg.ClientTLSInfo.KeyFile = *keyFile
	cfg.ClientTLSInfo.TrustedCAFile = *trustedCA
	cfg.ClientTLSInfo.ClientCertAuth = *clientCertAuth

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60 s")
		e.Server.Stop()
		return 1
	}
	fmt.Fprintf(os.Stderr, "etcd %s ready, serving clients on %s\n", version.Version, adv)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %s, stopping\n", s)
		return 0
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
}
