"""The Rust lab (`castle-lab`) driven from tests: start a service, talk to its /__lab/ controls."""

import json
import os
import subprocess
import urllib.request

from harness.terraform import provider_dir


def lab_binary():
    return os.path.join(provider_dir(), 'castle-lab')


class InfisicalLab(object):
    """`castle-lab infisical` on a free loopback port, with its fixed test identity."""

    client_id = 'castle-lab-client'
    client_secret = 'castle-lab-secret'
    project_id = 'castle-lab-project'
    environment = 'dev'

    def __init__(self, host='127.0.0.1', token_ttl=None, tls_dir=None):
        """`tls_dir`: serve HTTPS with a fresh private CA, whose certificate is then `ca_pem`."""
        args = [lab_binary(), 'infisical', '--listen', '%s:0' % host]
        if token_ttl:
            args += ['--token-ttl', str(token_ttl)]
        self.ca_pem = None
        ca_file = None
        if tls_dir:
            ca_file = os.path.join(str(tls_dir), 'infisical-ca.pem')
            args += ['--tls-ca-out', ca_file]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if 'listening on' not in line:
            self.proc.kill()
            raise RuntimeError('castle-lab infisical did not start: %r' % line)
        self.url = line.rsplit(' ', 1)[-1]
        self._context = None
        if ca_file:
            import ssl
            with open(ca_file) as f:
                self.ca_pem = f.read()
            self._context = ssl.create_default_context(cafile=ca_file)

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10, context=self._context) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def secrets(self):
        return self._call('GET', '/__lab/secrets')['secrets']

    def set_secret(self, path, key, value, environment=None):
        self._call('PUT', '/__lab/secrets', {'environment': environment or self.environment, 'path': path,
                                             'key': key, 'value': value})

    def delete_secret(self, path, key, environment=None):
        self._call('DELETE', '/__lab/secrets', {'environment': environment or self.environment, 'path': path,
                                                'key': key})

    def rate_limit(self, count, retry_after=1):
        self._call('POST', '/__lab/rate-limit', {'count': count, 'retry_after': retry_after})

    def expire_tokens(self, after_writes=0):
        """Expire every token now, or right after the next `after_writes` secret writes."""
        self._call('POST', '/__lab/expire-tokens', {'after_writes': after_writes})

    def events(self):
        """What the lab saw, in order: login, renew, token-refused, write, write-failed, ..."""
        return self._call('GET', '/__lab/events')['events']

    def change_policy(self, environment, bypass_for_machine_identities=False):
        self._call('PUT', '/__lab/change-policy', {'environment': environment,
                                                    'bypass_for_machine_identities': bypass_for_machine_identities})

    def change_requests(self):
        return self._call('GET', '/__lab/change-requests')['requests']

    def merge_change_request(self, request_id):
        self._call('POST', '/__lab/change-requests/%s/merge' % request_id)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# The Image Factory of the lab that runs now (`TalosLab`), for Terraform's environment.
_factory = {}


def factory_env():
    """TALOS_IMAGE_FACTORY_* for castle: the running lab's factory, else a loopback address where
    nothing listens (port 9, discard), so an upload fails at once instead of leaving the host."""
    return dict(_factory) or {'TALOS_IMAGE_FACTORY_URL': 'https://127.0.0.1:9'}


def stack_factory_env(info):
    """TALOS_IMAGE_FACTORY_* for castle from a whole lab's `lab.json` (`castle-lab up`)."""
    with open(info['factory']['ca_cert']) as f:
        return {'TALOS_IMAGE_FACTORY_URL': info['factory']['url'], 'TALOS_IMAGE_FACTORY_CA_CERT_PEM': f.read()}


def _free_port(host):
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return str(s.getsockname()[1])


# The extensions Longhorn needs: the template the README recommends for clusters that set them.
LONGHORN = ('siderolabs/iscsi-tools', 'siderolabs/util-linux-tools')


class TalosLab(object):
    """`castle-lab talos`: emulated Talos nodes (and the Kubernetes API behind the VIP), booted
    from a template disk image of `talos_version` with `template_extensions` (or from an ISO
    that installs, with `iso_boot`), and the lab's Image Factory."""

    def __init__(self, addresses, admin='127.0.0.1:0', time_scale=0.3, talos_version=None,
                 template_extensions=(), iso_boot=False):
        import tempfile
        host, port = admin.split(':')
        if port == '0':
            port = _free_port(host)
        self.admin = 'http://%s:%s' % (host, port)
        self._dir = tempfile.mkdtemp(prefix='castle-lab-factory-')
        ca_file = os.path.join(self._dir, 'factory-ca.pem')
        self.factory_url = 'https://127.0.0.1:%s' % _free_port('127.0.0.1')
        args = [lab_binary(), 'talos', '--nodes', ','.join(addresses), '--admin', '%s:%s' % (host, port),
                '--time-scale', str(time_scale), '--factory', self.factory_url[len('https://'):],
                '--factory-ca-out', ca_file, '--template-extensions', ','.join(template_extensions)]
        if talos_version:
            args += ['--talos-version', talos_version]
        if iso_boot:
            args += ['--iso-boot']
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_ready()
        with open(ca_file) as f:
            self.factory_ca_pem = f.read()
        _factory.clear()
        _factory.update({'TALOS_IMAGE_FACTORY_URL': self.factory_url,
                         'TALOS_IMAGE_FACTORY_CA_CERT_PEM': self.factory_ca_pem})

    def schematics(self):
        """Every schematic upload the lab's factory answered: [{'id', 'extensions'}], in order."""
        import ssl
        context = ssl.create_default_context(cadata=self.factory_ca_pem)
        with urllib.request.urlopen(self.factory_url + '/__lab/schematics', timeout=10, context=context) as resp:
            return json.loads(resp.read().decode())['uploads']

    def _wait_ready(self):
        import time
        for _ in range(100):
            try:
                self.nodes()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError('castle-lab talos exited: ' + self.proc.stderr.read())
                time.sleep(0.05)
        raise RuntimeError('castle-lab talos did not start')

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin + path, data=data, method=method,
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def nodes(self):
        """address -> summary (state, hostname, cluster_id, etcd_members, ...)."""
        return {n['address']: n for n in self._call('GET', '/nodes')}

    def running_config(self, address):
        """The v1alpha1 document of the config the node at `address` runs, or None."""
        return self._call('GET', '/nodes/%s/config' % address)

    def fault(self, address, kind, **extra):
        self._call('POST', '/nodes/%s/faults' % address, dict(kind=kind, **extra))

    def clear_faults(self, address):
        self._call('DELETE', '/nodes/%s/faults' % address)

    def add_node(self, address):
        self._call('POST', '/nodes', {'address': address})

    def stop(self):
        if _factory.get('TALOS_IMAGE_FACTORY_URL') == self.factory_url:
            _factory.clear()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
