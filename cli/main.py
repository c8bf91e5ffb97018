import click

@click.group()
def cli():
    """vl"""

def main():
    cli()
