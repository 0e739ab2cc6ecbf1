"""Acceptance scenarios of castle_kubeconfig_secret, against the Infisical lab.

Fixtures (acceptance-tests/conftest.py): `tf` builds a Terraform working dir, `infisical_lab`
runs `castle-lab infisical` and exposes its identity and /__lab/ helpers.
"""

import pytest

pytestmark = pytest.mark.acceptance

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: castle
  cluster:
    server: https://10.0.0.10:6443
contexts:
- name: admin@castle
  context:
    cluster: castle
    user: admin@castle
current-context: admin@castle
users:
- name: admin@castle
  user:
    token: lab-not-a-real-token
"""


def trimmed(value):
    """What Infisical stores: trimmed, keeping one trailing newline if there was one."""
    inner = value.strip()
    return inner + "\n" if value.endswith("\n") and inner else inner


def main_tf(lab, kubeconfig=KUBECONFIG, path="/clusters/home", extra="", environment=None,
            client_secret=None, host=None, provider_extra=""):
    return f"""
terraform {{
  required_providers {{
    castle = {{ source = "castle-lab/castle" }}
  }}
}}

provider "castle" {{
  infisical {{
    host          = "{host or lab.url}"
    client_id     = "{lab.client_id}"
    client_secret = "{client_secret or lab.client_secret}"
{provider_extra}
  }}
}}

resource "castle_kubeconfig_secret" "home" {{
  project_id  = "{lab.project_id}"
  environment = "{environment or lab.environment}"
  path        = "{path}"
  kubeconfig  = <<-EOT
{kubeconfig}EOT
{extra}
}}

output "id" {{
  value = castle_kubeconfig_secret.home.id
}}
"""


def stored(lab, key="KUBECONFIG", path="/clusters/home", environment="dev"):
    found = [s for s in lab.secrets()
             if s["key"] == key and s["path"] == path and s["environment"] == environment]
    return found[0] if found else None


def words(output):
    """Terraform's output with line wrapping undone, for exact message checks."""
    return " ".join(output.split())


def test_kubeconfig_is_uploaded_and_a_second_plan_is_empty(tf, infisical_lab):
    work = tf("upload")
    work.write(main_tf(infisical_lab))
    work.apply()
    secret = stored(infisical_lab)
    assert secret is not None
    assert secret["value"] == trimmed(KUBECONFIG)
    assert work.output("id") == f"{infisical_lab.project_id}:{infisical_lab.environment}:/clusters/home:KUBECONFIG"
    assert work.plan_is_empty()


def test_changed_input_updates_the_secret(tf, infisical_lab):
    work = tf("update")
    work.write(main_tf(infisical_lab))
    work.apply()
    changed = KUBECONFIG.replace("10.0.0.10", "10.0.0.11")
    work.write(main_tf(infisical_lab, kubeconfig=changed))
    work.apply()
    secret = stored(infisical_lab)
    assert secret["value"] == trimmed(changed)
    assert secret["version"] == 2
    assert work.plan_is_empty()


def test_out_of_band_change_is_restored(tf, infisical_lab):
    work = tf("restore")
    work.write(main_tf(infisical_lab))
    work.apply()
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", "tampered")
    assert not work.plan_is_empty()
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    assert work.plan_is_empty()


def test_out_of_band_delete_is_recreated(tf, infisical_lab):
    work = tf("recreate")
    work.write(main_tf(infisical_lab))
    work.apply()
    infisical_lab.delete_secret("/clusters/home", "KUBECONFIG")
    assert stored(infisical_lab) is None
    assert not work.plan_is_empty()
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    assert work.plan_is_empty()


def test_import_then_plan_is_empty(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", KUBECONFIG)
    work = tf("import")
    work.write(main_tf(infisical_lab))
    import_id = f"{infisical_lab.project_id}:{infisical_lab.environment}:/clusters/home:KUBECONFIG"
    work.import_("castle_kubeconfig_secret.home", import_id)
    assert work.plan_is_empty()


def test_existing_secret_with_the_same_value_is_adopted(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", KUBECONFIG + "\n\n")
    work = tf("adopt")
    work.write(main_tf(infisical_lab))
    work.apply()
    assert work.plan_is_empty()


def test_existing_secret_with_another_value_names_the_import_command(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", "someone else's")
    work = tf("conflict")
    work.write(main_tf(infisical_lab))
    result = work.apply(expect_fail=True)
    assert "terraform import" in str(result)
    assert stored(infisical_lab)["value"] == "someone else's"


def cluster_kubeconfig(ca, client_certificate, server="https://10.0.0.10:6443"):
    """A kubeconfig as castle_talos_cluster writes it: the cluster's CA and server, a client
    certificate."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: home
  cluster:
    server: {server}
    certificate-authority-data: {ca}
contexts:
- name: admin@home
  context:
    cluster: home
    user: admin@home
current-context: admin@home
users:
- name: admin@home
  user:
    client-certificate-data: {client_certificate}
    client-key-data: bGFiLWtleQ==
"""


def test_an_existing_kubeconfig_of_the_same_cluster_is_replaced_but_another_clusters_is_refused(tf, infisical_lab):
    # An earlier run's kubeconfig, left in Infisical when its Terraform state was lost; the
    # cluster, re-created from its escrowed secrets, issued a new client certificate.
    earlier = cluster_kubeconfig("Q0EtaG9tZQ==", "b2xkLWNlcnQ=")
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", earlier)
    current = cluster_kubeconfig("Q0EtaG9tZQ==", "bmV3LWNlcnQ=")
    work = tf("same-cluster")
    work.write(main_tf(infisical_lab, kubeconfig=current))
    result = words(work.apply())
    assert "Warning: Secret KUBECONFIG replaced: it held this cluster's older credentials" in result, result
    assert "bmV3LWNlcnQ" not in result and "b2xkLWNlcnQ" not in result
    assert stored(infisical_lab)["value"] == trimmed(current)
    assert work.plan_is_empty()

    # Another cluster's kubeconfig (another CA) at the same kind of place is still not ours.
    infisical_lab.set_secret("/clusters/other", "KUBECONFIG", cluster_kubeconfig("Q0Etb3RoZXI=", "b2xkLWNlcnQ="))
    other = tf("other-cluster")
    other.write(main_tf(infisical_lab, kubeconfig=current, path="/clusters/other"))
    refused = words(str(other.apply(expect_fail=True)))
    assert "terraform import" in refused, refused
    assert stored(infisical_lab, path="/clusters/other")["value"] == \
        trimmed(cluster_kubeconfig("Q0Etb3RoZXI=", "b2xkLWNlcnQ="))


def test_destroy_removes_the_secrets(tf, infisical_lab):
    work = tf("destroy")
    talos = """
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = "context: castle\\n"
"""
    work.write(main_tf(infisical_lab, extra=talos))
    work.apply()
    assert stored(infisical_lab, "TALOSCONFIG")["value"] == "context: castle\n"
    work.destroy()
    assert stored(infisical_lab) is None
    assert stored(infisical_lab, "TALOSCONFIG") is None


def test_rate_limits_are_waited_out(tf, infisical_lab):
    work = tf("rate-limit")
    work.write(main_tf(infisical_lab))
    infisical_lab.rate_limit(3, 1)
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)


def test_tokens_expiring_in_the_middle_of_an_apply_are_replaced(tf, infisical_lab):
    # Four secrets in one apply (one provider process); every token expires after the second
    # write, so the provider must notice the refusal and log in again mid-apply.
    work = tf("token-expiry")
    several = main_tf(infisical_lab) + """
resource "castle_kubeconfig_secret" "more" {
  count       = 3
  project_id  = "%s"
  environment = "%s"
  path        = "/clusters/more"
  kubeconfig_key = "KUBECONFIG_${count.index}"
  kubeconfig  = "apiVersion: v1\\n# ${count.index}\\n"
}
""" % (infisical_lab.project_id, infisical_lab.environment)
    work.write(several)
    infisical_lab.expire_tokens(after_writes=2)
    work.apply()
    events = infisical_lab.events()
    assert "write-failed" not in events, events
    expired = events.index("tokens-expired")
    after = events[expired:]
    # The expired token was really sent (and refused), then a new login, then the other writes.
    refused = after.index("token-refused")
    assert "login" in after[refused:], events
    assert events.count("write") == 4, events
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    for index in range(3):
        assert stored(infisical_lab, "KUBECONFIG_%d" % index, "/clusters/more")["value"] == \
            "apiVersion: v1\n# %d\n" % index


def test_talosconfig_without_its_key_is_a_plan_time_error(tf, infisical_lab):
    work = tf("bad-input")
    work.write(main_tf(infisical_lab, extra='  talosconfig = "context: castle\\n"\n'))
    result = words(work.plan(expect_fail=True))
    assert "Error: Missing talosconfig_key" in result
    assert "talosconfig is set, so talosconfig_key must name the secret to store it in." in result
    assert infisical_lab.secrets() == []


def test_path_without_leading_slash_is_a_plan_time_error(tf, infisical_lab):
    work = tf("bad-path")
    work.write(main_tf(infisical_lab, path="clusters/home"))
    result = words(work.plan(expect_fail=True))
    assert "Error: Invalid Infisical path" in result
    assert 'the path "clusters/home" must start with "/", e.g. "/clusters/home"' in result
    assert infisical_lab.secrets() == []


def test_folder_name_infisical_would_refuse_is_a_plan_time_error(tf, infisical_lab):
    work = tf("dotted-path")
    work.write(main_tf(infisical_lab, path="/clusters/home.lab"))
    result = words(work.plan(expect_fail=True))
    assert "Error: Invalid Infisical path" in result
    assert ('the folder name "home.lab" in path "/clusters/home.lab" contains \'.\'; Infisical allows '
            "only letters, digits, '-' and '_' in folder names") in result
    assert 'with castle_kubeconfig_secret.home' in result
    assert infisical_lab.secrets() == []


def test_folders_that_already_exist_are_used_as_they_are(tf, infisical_lab):
    # Someone made /clusters by hand (Infisical answers 400 to creating it again).
    infisical_lab.set_secret("/clusters", "OTHER", "kept")
    work = tf("existing-folder")
    work.write(main_tf(infisical_lab))
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    assert stored(infisical_lab, "OTHER", "/clusters")["value"] == "kept"
    assert "write-failed" not in infisical_lab.events()
    assert work.plan_is_empty()


def test_a_queued_first_creation_is_remembered_and_never_queued_twice(tf, infisical_lab):
    infisical_lab.change_policy("prod", bypass_for_machine_identities=False)
    work = tf("change-policy")
    work.write(main_tf(infisical_lab, environment="prod"))
    result = words(work.apply())
    requests = infisical_lab.change_requests()
    assert len(requests) == 1, requests
    assert "Warning: Secret KUBECONFIG waits for approval in Infisical" in result, result
    assert ('Infisical did not create secret KUBECONFIG but queued it as change request "%s"'
            % requests[0]["slug"] in result)
    assert 'environment "prod" has a change policy that applies to machine identities' in result
    assert stored(infisical_lab, environment="prod") is None
    # Terraform keeps the resource, so the next apply knows the request and queues no second one.
    again = words(work.apply())
    assert len(infisical_lab.change_requests()) == 1
    assert "No changes" in again and "Warning: Waiting on an Infisical change request" in again, again
    assert work.resources()["castle_kubeconfig_secret.home"]["kubeconfig_version"] is None
    # Approved and merged in Infisical: the version shows up and the plan stays empty.
    infisical_lab.merge_change_request(requests[0]["id"])
    assert work.plan_is_empty()
    work.apply()
    assert len(infisical_lab.change_requests()) == 1
    assert stored(infisical_lab, environment="prod")["value"] == trimmed(KUBECONFIG)
    assert work.resources()["castle_kubeconfig_secret.home"]["kubeconfig_version"] == \
        stored(infisical_lab, environment="prod")["version"]


def test_a_change_waiting_for_approval_is_not_queued_again(tf, infisical_lab):
    work = tf("waiting-change")
    work.write(main_tf(infisical_lab, environment="prod"))
    work.apply()
    infisical_lab.change_policy("prod", bypass_for_machine_identities=False)
    changed = KUBECONFIG.replace("10.0.0.10", "10.0.0.13")
    work.write(main_tf(infisical_lab, kubeconfig=changed, environment="prod"))
    first = words(work.apply(expect_fail=True))
    requests = infisical_lab.change_requests()
    assert len(requests) == 1, requests
    slug = requests[0]["slug"]
    assert 'queued it as change request "%s"' % slug in first
    # Applying again while the request waits: reported, not queued a second time.
    second = words(work.apply(expect_fail=True))
    assert len(infisical_lab.change_requests()) == 1
    assert ('this change to secret KUBECONFIG already waits in Infisical as change request "%s"' % slug
            in second)
    assert "Warning: Waiting on an Infisical change request" in second
    assert stored(infisical_lab, environment="prod")["value"] == trimmed(KUBECONFIG)
    # Merged in Infisical: the new value is there and the plan is empty.
    infisical_lab.merge_change_request(requests[0]["id"])
    assert work.plan_is_empty()
    assert stored(infisical_lab, environment="prod")["value"] == trimmed(changed)
    assert len(infisical_lab.change_requests()) == 1


def test_a_wrong_client_secret_fails_the_plan_naming_the_setting(tf, infisical_lab):
    work = tf("wrong-secret")
    work.write(main_tf(infisical_lab, client_secret="not-the-lab-secret"))
    output = work.plan(expect_fail=True)
    result = words(output)
    assert "Error: Invalid Infisical credentials" in result
    assert ("refused the provider's machine identity: check client_id and client_secret in the "
            "provider's infisical block") in result
    assert "not-the-lab-secret" not in output
    # One check per provider process: a plan never locks the identity out on its own.
    assert infisical_lab.events().count("login-refused") == 1


def test_an_unreachable_infisical_is_a_plan_warning(tf, infisical_lab):
    work = tf("unreachable")
    # Nothing listens on loopback port 9 (discard).
    work.write(main_tf(infisical_lab, host="http://127.0.0.1:9"))
    result = words(work.plan())
    assert "Warning: Infisical did not answer" in result
    assert "Could not reach Infisical at http://127.0.0.1:9 (the provider's infisical.host" in result


def test_a_self_hosted_infisical_behind_a_private_ca_is_trusted_with_ca_cert_pem(tf, tmp_path):
    from harness.lab import InfisicalLab
    lab = InfisicalLab(tls_dir=tmp_path)
    try:
        assert lab.url.startswith("https://")
        work = tf("private-ca")
        pem = "    ca_cert_pem   = <<-PEM\n%s\nPEM\n" % lab.ca_pem.strip()
        work.write(main_tf(lab, provider_extra=pem))
        work.apply()
        assert stored(lab)["value"] == trimmed(KUBECONFIG)
        # Without it, the certificate is not trusted: a plan error saying what to set, at once
        # (retrying cannot help).
        untrusted = tf("private-ca-untrusted")
        untrusted.write(main_tf(lab))
        result = words(untrusted.plan(expect_fail=True))
        assert "Error: Infisical's TLS certificate is not trusted" in result, result
        assert "invalid peer certificate: UnknownIssuer" in result
        assert "infisical { ca_cert_pem } (or INFISICAL_CA_CERT_PEM)" in result
        assert "Infisical did not answer" not in result
    finally:
        lab.stop()


def test_a_new_comment_alone_is_written_with_a_new_version(tf, infisical_lab):
    work = tf("comment")
    work.write(main_tf(infisical_lab, extra='  comment = "first"\n'))
    work.apply()
    before = stored(infisical_lab)
    work.write(main_tf(infisical_lab, extra='  comment = "second"\n'))
    work.apply()
    after = stored(infisical_lab)
    assert after["comment"] == "second"
    assert after["value"] == before["value"]
    assert after["version"] == before["version"] + 1
    assert work.plan_is_empty()
