package srsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"mailfwd/routing/srs"
)

// Redis keeps senders in a Redis server several instances share, in
// postsrsd 2.x's layout: key <prefix><KEY>@1 (prefix "PostSRSd/" by
// default), value the sender, expiring after the SRS lifetime. So a bounce
// reaching any instance reverses, and so do the addresses a postsrsd 2.x
// in database mode stored there before the migration.
type Redis struct {
	c      *redis.Client
	prefix string
	ttl    time.Duration
}

// RedisOptions configures NewRedis.
type RedisOptions struct {
	Addr     string // host:port
	Password string
	DB       int
	Prefix   string        // before every key (postsrsd 2.x's: "PostSRSd/"); may be empty
	Timeout  time.Duration // dial, read and write; required
	// MaxAgeDays: entries live MaxAgeDays+1 days.
	MaxAgeDays int
}

// NewRedis returns a store on the server; it does not connect yet.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Addr == "" {
		return nil, errors.New("srs store: redis address required")
	}
	if o.MaxAgeDays < 1 {
		return nil, fmt.Errorf("srs store: max age %d days", o.MaxAgeDays)
	}
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("srs store: redis timeout %v", o.Timeout)
	}
	c := redis.NewClient(&redis.Options{Addr: o.Addr, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: 1, DisableIdentity: true})
	return &Redis{c: c, prefix: o.Prefix, ttl: time.Duration(o.MaxAgeDays+1) * 24 * time.Hour}, nil
}

func (r *Redis) name(key string) string { return r.prefix + key + "@1" }

// Put stores sender; day does not matter to Redis (the TTL expires it).
func (r *Redis) Put(ctx context.Context, key, sender string, _ int64) error {
	if err := r.c.Set(ctx, r.name(key), sender, r.ttl).Err(); err != nil {
		return fmt.Errorf("srs store redis: %w", err)
	}
	return nil
}

// Get returns the sender stored under key.
func (r *Redis) Get(ctx context.Context, key string, _ int64) (string, error) {
	v, err := r.c.Get(ctx, r.name(key)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", srs.ErrUnknownKey
	case err != nil:
		return "", fmt.Errorf("srs store redis: %w", err)
	}
	return v, nil
}

// Ping checks the server answers (for check-config and health).
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }
