"""Subscriptions (spec 6 and 7): their tables, and the append trigger.

The trigger runs inside every append's transaction, whatever path the append
took (HTTP, the in-process API, model change streams): it links streams a
pattern discovers at their tail before that append (spec 6.2) and notifies
``s<id>`` on the stream NOTIFY channel for each idle subscription the stream
belongs to. While no subscription exists it costs one index probe. Stream
removal drops pattern links and rewinds explicit ones to 0 for a successor.
"""

import django.db.models.deletion
from django.db import migrations, models

APPEND_FUNCTION = r"""
CREATE OR REPLACE FUNCTION durable_streams_subscription_append() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sub_id bigint;
BEGIN
    PERFORM 1 FROM durable_streams_subscription WHERE deleted_at IS NULL LIMIT 1;
    IF NOT FOUND OR split_part(NEW.path, '/', 1) = '__ds' THEN
        RETURN NULL;
    END IF;
    INSERT INTO durable_streams_subscription_link (subscription_id, path, explicit, acked, linked_at)
    SELECT s.id, NEW.path, false, OLD.tail, now()
      FROM durable_streams_subscription s
     WHERE s.deleted_at IS NULL AND s.pattern_regex IS NOT NULL
       AND ('/' || NEW.path) ~ s.pattern_regex
       AND NOT EXISTS (SELECT 1 FROM durable_streams_subscription_link l
                        WHERE l.subscription_id = s.id AND l.path = NEW.path)
    ON CONFLICT (subscription_id, path) DO NOTHING;
    FOR sub_id IN
        SELECT l.subscription_id FROM durable_streams_subscription_link l
          JOIN durable_streams_subscription s ON s.id = l.subscription_id
         WHERE l.path = NEW.path AND s.deleted_at IS NULL AND s.wake_id IS NULL
    LOOP
        PERFORM pg_notify(TG_ARGV[0], 's' || sub_id);
    END LOOP;
    RETURN NULL;
END
$$;
"""

UNLINK_FUNCTION = r"""
CREATE OR REPLACE FUNCTION durable_streams_subscription_unlink() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM durable_streams_subscription WHERE deleted_at IS NULL LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    DELETE FROM durable_streams_subscription_link WHERE path = OLD.path AND NOT explicit;
    UPDATE durable_streams_subscription_link SET acked = 0
     WHERE path = OLD.path AND explicit AND acked <> 0;
    RETURN NULL;
END
$$;
"""

TRIGGERS = r"""
CREATE TRIGGER durable_streams_subscription_append
AFTER UPDATE OF tail ON durable_streams_stream FOR EACH ROW
WHEN (NEW.tail > OLD.tail AND NEW.deleted_at IS NULL)
EXECUTE FUNCTION durable_streams_subscription_append({channel});
CREATE TRIGGER durable_streams_subscription_unlink_deleted
AFTER UPDATE OF deleted_at ON durable_streams_stream FOR EACH ROW
WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
EXECUTE FUNCTION durable_streams_subscription_unlink();
CREATE TRIGGER durable_streams_subscription_unlink_purged
AFTER DELETE ON durable_streams_stream FOR EACH ROW
WHEN (OLD.deleted_at IS NULL)
EXECUTE FUNCTION durable_streams_subscription_unlink();
"""

DROP = r"""
DROP TRIGGER IF EXISTS durable_streams_subscription_append ON durable_streams_stream;
DROP TRIGGER IF EXISTS durable_streams_subscription_unlink_deleted ON durable_streams_stream;
DROP TRIGGER IF EXISTS durable_streams_subscription_unlink_purged ON durable_streams_stream;
DROP FUNCTION IF EXISTS durable_streams_subscription_append();
DROP FUNCTION IF EXISTS durable_streams_subscription_unlink();
"""


def create_triggers(apps, schema_editor):
    # The channel live readers LISTEN on (DURABLE_STREAMS["NOTIFY_CHANNEL"]),
    # fixed at migrate time; system check E030 reports a later change.
    from durable_streams.conf import ds_settings

    channel = ds_settings.NOTIFY_CHANNEL.replace("'", "''")
    schema_editor.execute(APPEND_FUNCTION)
    schema_editor.execute(UNLINK_FUNCTION)
    schema_editor.execute(TRIGGERS.format(channel=f"'{channel}'"))


def drop_triggers(apps, schema_editor):
    schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ('durable_streams', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='Subscription',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.TextField()),
                ('kind', models.CharField(choices=[('webhook', 'webhook'), ('pull-wake', 'pull-wake')], max_length=16)),
                ('pattern', models.TextField(blank=True, null=True)),
                ('pattern_regex', models.TextField(blank=True, null=True)),
                ('webhook_url', models.TextField(blank=True, null=True)),
                ('wake_stream', models.TextField(blank=True, null=True)),
                ('lease_ttl_ms', models.IntegerField()),
                ('description', models.TextField(blank=True, null=True)),
                ('config_hash', models.CharField(max_length=64)),
                ('root_url', models.TextField()),
                ('created_at', models.DateTimeField()),
                ('deleted_at', models.DateTimeField(blank=True, null=True)),
                ('status', models.CharField(choices=[('active', 'active'), ('failed', 'failed')], default='active', max_length=16)),
                ('generation', models.BigIntegerField(default=0)),
                ('wake_id', models.TextField(blank=True, null=True)),
                ('wake_snapshot', models.JSONField(blank=True, null=True)),
                ('woken_at', models.DateTimeField(blank=True, null=True)),
                ('holder', models.TextField(blank=True, null=True)),
                ('lease_expires_at', models.DateTimeField(blank=True, null=True)),
                ('attempts', models.IntegerField(default=0)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True, null=True)),
                ('last_delivered_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'db_table': 'durable_streams_subscription',
                'ordering': ['name'],
                'indexes': [models.Index(condition=models.Q(('deleted_at__isnull', True), ('lease_expires_at__isnull', False)), fields=['lease_expires_at'], name='ds_subscription_lease'), models.Index(condition=models.Q(('deleted_at__isnull', True), ('next_attempt_at__isnull', False)), fields=['next_attempt_at'], name='ds_subscription_attempt')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('deleted_at__isnull', True)), fields=('name',), name='ds_subscription_live_name')],
            },
        ),
        migrations.CreateModel(
            name='SubscriptionLink',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('path', models.TextField()),
                ('explicit', models.BooleanField(default=False)),
                ('acked', models.BigIntegerField(default=0)),
                ('linked_at', models.DateTimeField()),
                ('subscription', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='links', to='durable_streams.subscription')),
            ],
            options={
                'db_table': 'durable_streams_subscription_link',
                'ordering': ['path'],
                'indexes': [models.Index(fields=['path'], name='ds_link_path')],
                'constraints': [models.UniqueConstraint(fields=('subscription', 'path'), name='ds_link_sub_path')],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
