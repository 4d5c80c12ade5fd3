// Command users-go is the Go baseline of `make bench`: users.v1.UserService/GetUser
// served from the same PostgreSQL table as our users service, with pgx and the same pool
// size, either by grpc-go with its usual middleware or by connect-go.
//
//	-protocol grpc     grpc-go: otelgrpc stats handler (an SDK tracer provider, everything
//	                   sampled, no exporter, as our services run without an OTLP endpoint),
//	                   go-grpc-middleware/v2 Prometheus metrics, one slog JSON log line per
//	                   call, panic recovery; grpc.health.v1 registered.
//	-protocol grpc-bare
//	                   the same grpc-go server with no middleware at all (no tracing,
//	                   metrics, logging or recovery): what -protocol grpc's middleware
//	                   costs, as bare_users measures our stack's.
//	-protocol connect  connect-go on HTTP/1.1 and h2c on one port (Connect, gRPC and
//	                   gRPC-Web), no interceptors: the handler as connect-go's docs serve it,
//	                   but with WithCompressMinBytes(1024), our services' threshold
//	                   (connect.COMPRESS_MIN_BYTES), so that neither gzips a GetUser answer
//	                   for a client that accepts gzip (vegeta, as Go's HTTP client, does).
//	-protocol connect-observed
//	                   the same connect-go handler with what -protocol grpc has: otelconnect's
//	                   interceptor (OpenTelemetry tracing with an SDK tracer provider, everything
//	                   sampled, no exporter; its RPC metrics through the OpenTelemetry
//	                   Prometheus exporter), one slog JSON log line per call, panic recovery.
//
// It logs one JSON line with the listening "address" (the bench reads it), serves
// Prometheus metrics on a second port ("admin_address"), and stops on SIGTERM or SIGINT.
// Env: BENCH_GO_DATABASE_URL (required), BENCH_GO_MAX_CONNECTIONS (pool size, default 10).
// The code under gen/ is generated from proto/ by scripts/bench.sh and is not committed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/google/uuid"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	usersv1 "benchgo/gen/users/v1"
	"benchgo/gen/users/v1/usersv1connect"
)

func main() {
	protocol := flag.String("protocol", "grpc",
		"grpc (grpc-go with middleware), grpc-bare (grpc-go without), connect (connect-go, h2c) or "+
			"connect-observed (connect-go with interceptors)")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	if err := run(*protocol, *listen, logger); err != nil {
		logger.Error("users-go failed", "error", err.Error())
		os.Exit(1)
	}
}

func run(protocol, listen string, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := openPool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := &userStore{pool: pool}

	registry := prometheus.NewRegistry()
	var serve func(net.Listener) error
	var shutdown func()
	switch protocol {
	case "grpc":
		server := newGRPCServer(store, registry, logger)
		serve, shutdown = server.Serve, server.GracefulStop
	case "grpc-bare":
		server := newBareGRPCServer(store)
		serve, shutdown = server.Serve, server.GracefulStop
	case "connect", "connect-observed":
		var options []connect.HandlerOption
		if protocol == "connect-observed" {
			if options, err = observedConnectOptions(registry, logger); err != nil {
				return err
			}
		}
		server := newConnectServer(store, options...)
		serve = server.Serve
		shutdown = func() { _ = server.Shutdown(context.Background()) }
	default:
		return fmt.Errorf("-protocol must be grpc, grpc-bare, connect or connect-observed, not %q", protocol)
	}

	listener, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for metrics: %w", err)
	}
	metrics := &http.Server{Handler: promhttp.HandlerFor(registry, promhttp.HandlerOpts{})}
	go func() { _ = metrics.Serve(admin) }()
	defer metrics.Close()

	logger.Info("users-go listening", "protocol", protocol, "address", listener.Addr().String(),
		"admin_address", admin.Addr().String())
	done := make(chan error, 1)
	go func() { done <- serve(listener) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		shutdown()
		return nil
	}
}

// openPool connects the pgx pool: BENCH_GO_MAX_CONNECTIONS connections at most (default 10,
// our services' database.max_connections), statements prepared and cached per connection
// (pgx's default), so a GetUser is one round trip.
func openPool(ctx context.Context) (*pgxpool.Pool, error) {
	url := os.Getenv("BENCH_GO_DATABASE_URL")
	if url == "" {
		return nil, errors.New("BENCH_GO_DATABASE_URL is unset")
	}
	config, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("BENCH_GO_DATABASE_URL: %w", err)
	}
	config.MaxConns = 10
	if value := os.Getenv("BENCH_GO_MAX_CONNECTIONS"); value != "" {
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("BENCH_GO_MAX_CONNECTIONS: %q is not a positive integer", value)
		}
		config.MaxConns = int32(n)
	}
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping the database: %w", err)
	}
	return pool, nil
}

// errNotFound: no user has the id asked for.
var errNotFound = errors.New("user not found")

// errInvalidID: the id asked for is not a UUID.
var errInvalidID = errors.New("id: not a UUID")

// userStore reads users from the users table of crates/users/migrations.
type userStore struct {
	pool *pgxpool.Pool
}

// get reads the user with the id `id` (a UUID in any form uuid.Parse accepts, stored
// canonical); errInvalidID or errNotFound, or the database's error.
func (s *userStore) get(ctx context.Context, id string) (*usersv1.User, error) {
	parsed, err := uuid.Parse(id)
	if err != nil {
		return nil, errInvalidID
	}
	var user usersv1.User
	var createdMicros int64
	err = s.pool.QueryRow(ctx, "SELECT id, email, name, created_at FROM users WHERE id = $1", parsed.String()).
		Scan(&user.Id, &user.Email, &user.Name, &createdMicros)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	user.CreatedAt = timestamppb.New(time.UnixMicro(createdMicros))
	return &user, nil
}

// grpcUsers is the grpc-go UserService: GetUser only.
type grpcUsers struct {
	usersv1.UnimplementedUserServiceServer
	store *userStore
}

func (g *grpcUsers) GetUser(ctx context.Context, request *usersv1.GetUserRequest) (*usersv1.GetUserResponse, error) {
	user, err := g.store.get(ctx, request.GetId())
	switch {
	case errors.Is(err, errInvalidID):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, status.Error(codes.Internal, "internal error")
	}
	return &usersv1.GetUserResponse{User: user}, nil
}

// useTracing installs the global tracer provider (an SDK one, everything sampled, no
// exporter, as our services run without an OTLP endpoint) and the W3C propagators.
func useTracing() {
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))))
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}

// newGRPCServer builds grpc-go with the middleware a Go service usually has: OpenTelemetry
// tracing (stats handler), Prometheus metrics, a JSON log line per call, panic recovery.
func newGRPCServer(store *userStore, registry *prometheus.Registry, logger *slog.Logger) *grpc.Server {
	useTracing()
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	registry.MustRegister(metrics)
	server := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ChainUnaryInterceptor(
			metrics.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(interceptorLogger(logger), logging.WithLogOnEvents(logging.FinishCall)),
			recovery.UnaryServerInterceptor(),
		),
	)
	usersv1.RegisterUserServiceServer(server, &grpcUsers{store: store})
	healthpb.RegisterHealthServer(server, health.NewServer())
	metrics.InitializeMetrics(server)
	return server
}

// newBareGRPCServer builds grpc-go with the same services and no middleware: the
// baseline -protocol grpc's middleware is measured against.
func newBareGRPCServer(store *userStore) *grpc.Server {
	server := grpc.NewServer()
	usersv1.RegisterUserServiceServer(server, &grpcUsers{store: store})
	healthpb.RegisterHealthServer(server, health.NewServer())
	return server
}

// interceptorLogger adapts slog to go-grpc-middleware's logger (its documented adapter).
func interceptorLogger(logger *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, level logging.Level, msg string, fields ...any) {
		logger.Log(ctx, slog.Level(level), msg, fields...)
	})
}

// connectUsers is the connect-go UserService: GetUser only.
type connectUsers struct {
	usersv1connect.UnimplementedUserServiceHandler
	store *userStore
}

func (c *connectUsers) GetUser(
	ctx context.Context,
	request *connect.Request[usersv1.GetUserRequest],
) (*connect.Response[usersv1.GetUserResponse], error) {
	user, err := c.store.get(ctx, request.Msg.GetId())
	switch {
	case errors.Is(err, errInvalidID):
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, errNotFound):
		return nil, connect.NewError(connect.CodeNotFound, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	return connect.NewResponse(&usersv1.GetUserResponse{User: user}), nil
}

// newConnectServer serves the connect-go handler, with `options`, over HTTP/1.1 and HTTP/2
// without TLS (h2c) on one port, as connect-go's getting-started guide does.
func newConnectServer(store *userStore, options ...connect.HandlerOption) *http.Server {
	mux := http.NewServeMux()
	options = append(options, connect.WithCompressMinBytes(1024))
	mux.Handle(usersv1connect.NewUserServiceHandler(&connectUsers{store: store}, options...))
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: mux, Protocols: protocols, ReadHeaderTimeout: 10 * time.Second}
}

// observedConnectOptions gives connect-go what newGRPCServer gives grpc-go: OpenTelemetry
// tracing and metrics (otelconnect; the metrics registered in `registry` through the
// OpenTelemetry Prometheus exporter), a JSON log line per call, panic recovery.
func observedConnectOptions(registry *prometheus.Registry, logger *slog.Logger) ([]connect.HandlerOption, error) {
	useTracing()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("the Prometheus exporter: %w", err)
	}
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)))
	observed, err := otelconnect.NewInterceptor()
	if err != nil {
		return nil, fmt.Errorf("otelconnect: %w", err)
	}
	recovered := func(_ context.Context, _ connect.Spec, _ http.Header, panicked any) error {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("panic: %v", panicked))
	}
	return []connect.HandlerOption{
		connect.WithInterceptors(observed, logCalls(logger)),
		connect.WithRecover(recovered),
	}, nil
}

// logCalls logs one JSON line per finished unary call, as go-grpc-middleware's logging
// interceptor does for grpc-go: procedure, protocol, code and duration.
func logCalls(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, request connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			response, err := next(ctx, request)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			logger.LogAttrs(ctx, slog.LevelInfo, "finished call",
				slog.String("procedure", request.Spec().Procedure), slog.String("protocol", request.Peer().Protocol),
				slog.String("code", code), slog.Duration("duration", time.Since(start)))
			return response, err
		}
	}
}
