import { render } from 'preact';
import './style.css';
import { App } from './app';
import { language } from './i18n';
import { start } from './state';

document.documentElement.lang = language();
document.title = 'Veche';
const root = document.getElementById('app');
if (root) render(<App />, root);
void start();
